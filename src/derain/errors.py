"""The few exception types users catch.

Every error raised on bad user input derives from :class:`DerainError`; the CLI turns it into one line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations


class DerainError(Exception):
    """Base class of every error derain raises on purpose."""


class InputError(DerainError, ValueError):
    """An image, tensor, file or argument that does not meet the contract (says what is wrong and how to fix it)."""


class DataError(DerainError):
    """A dataset folder or list that cannot be read or paired."""


class WeightsError(DerainError):
    """A checkpoint that cannot be recognised, loaded or verified."""


class DownloadError(DerainError):
    """A file that could not be downloaded, or that arrived different from its pin (says the URL and where to put
    the file by hand)."""

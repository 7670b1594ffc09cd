"""MkDocs hook: the docstrings use Sphinx roles (:func:`x`), which Markdown renders as ':func:' before the code span;
drop the role so the API reference reads `x`."""

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):(?=<code>)")


def on_page_content(html, **kwargs):
    return _ROLE.sub("", html)

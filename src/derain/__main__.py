"""``python -m derain`` runs the command-line interface."""

import sys

from derain.cli import main

sys.exit(main())

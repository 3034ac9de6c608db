"""``python -m dropnotes`` is the ``dropnotes`` command."""

import sys

from dropnotes.cli import main

sys.exit(main())

"""``python -m sa3 ...``: see sa3/cli.py."""

import sys

from .cli import main

sys.exit(main())

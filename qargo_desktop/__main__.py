"""Allow ``python -m qargo_desktop``."""

import sys

from qargo_desktop.cli import main

sys.exit(main())

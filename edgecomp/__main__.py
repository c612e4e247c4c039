"""``python -m edgecomp``."""

import sys

from edgecomp.cli import main

sys.exit(main())

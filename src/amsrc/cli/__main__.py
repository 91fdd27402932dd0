"""``python -m amsrc.cli``."""

import sys

from amsrc.cli import main

sys.exit(main())

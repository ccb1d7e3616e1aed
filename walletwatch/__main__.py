"""python -m walletwatch."""

import sys

from walletwatch.cli import main

sys.exit(main())

"""`python -m squeeze_suite ...` runs the `squeeze` command."""

import sys

from squeeze_suite.cli import main

sys.exit(main())

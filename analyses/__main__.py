"""`python -m analyses`: the paper's analyses of a run or a study's best model (see analyses/cli.py)."""

import sys

from analyses.cli import main

sys.exit(main())

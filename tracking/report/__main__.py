import sys

from tracking.report.cli import main

sys.exit(main())

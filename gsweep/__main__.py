import sys

from gsweep.cli import main

sys.exit(main())

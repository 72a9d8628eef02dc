import sys

from fogsim.cli import main

sys.exit(main())

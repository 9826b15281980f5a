import sys

from bfn.cli import main

sys.exit(main())

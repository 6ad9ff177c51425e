"""``python -m fastair ...``: the command line of :mod:`fastair.cli`."""
import sys

from fastair.cli import main

if __name__ == "__main__":
    sys.exit(main())

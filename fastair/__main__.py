"""``python -m fastair ...``: the command line of :mod:`fastair.cli`; ``python -m fastair
--info`` is ``fastair info``."""
import sys

from fastair.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--info"]:
        argv = ["info", *argv[1:]]
    sys.exit(main(argv))

"""`python -m contain`: the contain command."""

import sys

from contain.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

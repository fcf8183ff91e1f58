"""``python -m <plugin>.models.fleet TEMPLATE SCENES... -o OUT``: run a fleet of scenes (see ``cli.py``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

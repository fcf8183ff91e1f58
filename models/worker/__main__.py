"""``python -m <plugin>.models.worker <job.json>``: run one job (see ``cli.py``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

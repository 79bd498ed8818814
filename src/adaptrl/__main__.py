"""``python -m adaptrl``: the `adaptrl` command line."""

import sys

from .cli import main

sys.exit(main())

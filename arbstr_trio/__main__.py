"""``python -m arbstr_trio`` is ``arbstr-trio``."""

import sys

from arbstr_trio.cli import main

sys.exit(main())

"""``python -m search SPEC ...``: the same as ``python -m search.run``."""

import sys

from search.run import main

sys.exit(main())

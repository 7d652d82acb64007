"""``python -m mptcp_impl``: see mptcp_impl.cli."""

import sys

from .cli import main

sys.exit(main())

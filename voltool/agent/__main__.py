"""`python3 -I -m <package>`: run the agent."""

import sys

from .main import main

sys.exit(main())

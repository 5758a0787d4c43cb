"""`python -m hostagent.cli`: the `loris` command."""

import sys

from hostagent.cli import main

sys.exit(main())

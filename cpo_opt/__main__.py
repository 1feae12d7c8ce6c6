"""``python -m cpo_opt`` runs the command line."""

import sys

from cpo_opt.cli import main

sys.exit(main())

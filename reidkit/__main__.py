"""``python -m reidkit`` (and ``torchrun -m reidkit``) runs the CLI."""

import sys

from reidkit.cli import main

sys.exit(main())

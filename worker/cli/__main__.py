"""``python -m worker.cli``: the ``voicecode`` command."""
import sys

from worker.cli import main

sys.exit(main())

"""``python -m cli``: the ``voicecode`` command."""
import sys

from cli import main

sys.exit(main())

"""``python -m lottery`` is the ``lottery`` command."""
import sys

from lottery.cli import main

sys.exit(main())

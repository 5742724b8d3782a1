"""``python -m opis_cli.cli``: the ``opis`` command."""

import sys

from .root import main

sys.exit(main())

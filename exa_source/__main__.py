"""``python -m exa_source``: the same CLI as ``exa-source``."""

import sys

from exa_source.cli import main

sys.exit(main())

"""``python -m seglearn.runtime MODEL.slq IMAGES... --out DIR``: see ``seglearn.runtime.cli``."""

import sys

from seglearn.runtime.cli import main

sys.exit(main())

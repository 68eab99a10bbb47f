"""`python -m kvcache ...` is the same as the `kvcache` console script."""

import sys

from kvcache.cli import main

sys.exit(main())

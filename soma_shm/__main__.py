"""``python -m soma_shm`` is the ``soma-shm`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

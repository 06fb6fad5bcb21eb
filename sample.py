"""Draw samples from a checkpoint: ``python sample.py --checkpoint runs/x/checkpoint.pt``.

A thin wrapper over ``mixerflow sample``.
"""

import sys

from mixerflow.cli import main

if __name__ == "__main__":
    main(["sample", *sys.argv[1:]])

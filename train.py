"""Train a flow: ``python train.py --config configs/quickstart.yaml [key.sub=value ...]``.

A thin wrapper over ``mixerflow train``; see ``mixerflow/training/loop.py`` for the loop.
"""

import sys

from mixerflow.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])

"""Train the hemseg U-Net: `accelerate launch train.py --data D --output-dir O`.

The training loop lands with issue 4; until then this script states so and exits non-zero, so that nothing
downstream mistakes its run for a trained model.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="slice folder, saved Arrow data set or Hub data set id")
    parser.add_argument("--output-dir", required=True, help="folder for the trained model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parse_args(argv)
    print("train.py: the training loop is not implemented yet (issue 4); no model was written.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m hemseg.lab TOOL ...`: the same as `hemseg lab TOOL ...`."""

import sys

from hemseg.cli import main

raise SystemExit(main(["lab", *sys.argv[1:]]))

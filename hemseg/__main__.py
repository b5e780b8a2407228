"""`python -m hemseg`: the command line."""

from hemseg.cli import main

raise SystemExit(main())

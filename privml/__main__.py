"""``python -m privml``: the command line."""

from .cli import main

raise SystemExit(main())

"""``python -m embedserve``: the same as the ``embedserve`` console script."""

from embedserve.cli import main

raise SystemExit(main())

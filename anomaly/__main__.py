"""``python -m anomaly ...``: see ``anomaly.cli``."""

from anomaly.cli import main

raise SystemExit(main())

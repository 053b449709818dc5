"""``python -m cascade.cli``: the same as the ``cascade`` command."""

from . import main

raise SystemExit(main())

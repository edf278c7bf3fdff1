"""``python -m prostate_fast.cli``: the ``prostate-fast`` command."""

from .main import main

raise SystemExit(main())

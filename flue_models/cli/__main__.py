"""``python -m flue_models.cli``: the ``flue-models`` command."""

from flue_models.cli import main

raise SystemExit(main())

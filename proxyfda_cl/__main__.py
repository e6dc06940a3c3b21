"""``python -m proxyfda_cl``: the ``proxyfda-cl`` command."""
from .cli import main

raise SystemExit(main())

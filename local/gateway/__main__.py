"""`python -m local.gateway`: see local/gateway/cli.py."""

from local.gateway.cli import main

raise SystemExit(main())

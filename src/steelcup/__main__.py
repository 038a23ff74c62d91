"""`python -m steelcup` runs the CLI."""

from steelcup.cli.main import main

raise SystemExit(main())

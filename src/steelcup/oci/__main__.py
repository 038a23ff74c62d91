"""`python -m steelcup.oci` is `steelcup-runtime`."""

from steelcup.oci.main import main

raise SystemExit(main())

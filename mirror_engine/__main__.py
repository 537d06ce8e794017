"""`python -m mirror_engine` -> cli.main()."""

from mirror_engine.cli import main

raise SystemExit(main())

"""`python -m kqv …` runs the same CLI as the `kqv` console script."""

from kqv.cli import main

raise SystemExit(main())

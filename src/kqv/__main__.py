"""`python -m kqv …` runs the same CLI as the `kqv` console script."""

try:
    from kqv.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python is still importing the CLI: one line, as main() would say
    import sys

    print("kqv: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())

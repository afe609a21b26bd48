"""Pictures: PNG plots written with matplotlib's non-interactive backend."""

"""One module per command group; each has register(subparsers).

These modules, and only these, import the rest of kqv inside their functions: building the parser
for `kqv --help` then costs no torch import. Library modules import at their top (tests/test_layers.py).
"""

"""The ``coopasd`` command line: one thin module per command."""

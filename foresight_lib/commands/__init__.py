"""Subcommands of the ``foresight`` command line, one module each."""

"""Subcommands of the ``nara`` command, one module each (see :mod:`nara.cli`)."""

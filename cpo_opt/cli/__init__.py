"""The ``cpo-opt`` command line: argument parsing and text tables only (top layer)."""

from cpo_opt.cli.main import console, main

__all__ = ["console", "main"]

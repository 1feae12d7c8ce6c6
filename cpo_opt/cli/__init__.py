"""The ``cpo-opt`` command line: argument parsing and text tables only (top layer)."""

from cpo_opt.cli.main import main

__all__ = ["main"]

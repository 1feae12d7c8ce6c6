"""``python -m cpo_opt`` runs the command line."""

from cpo_opt.cli import console

console()

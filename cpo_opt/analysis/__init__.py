"""What the commands compute: evaluate, optimize, sensitivity, validate, bench.

Layer 4: imports model, inputs and search. No argparse, no printing: each function returns
a dict or a typed result; :mod:`cpo_opt.cli` formats it.
"""

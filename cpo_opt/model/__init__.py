"""The traced step-time model: configuration pytrees, constants and the formulas.

Bottom layer: imports nothing else of cpo_opt. Everything here is pure JAX on SI units
(seconds, bytes, bytes/s, FLOP/s, joules); reading files and printing live in upper layers.
"""

"""Choices between model blocks, made at trace time whenever the choice is known.

Under ``jit`` every ``jnp`` operation is staged, even on constants, so a ``jnp.where`` on a
model flag keeps both branches in the compiled graph. When the flag is a plain number (the
model or switch is a compile-time constant, as in the exact batched scorers), these helpers
pick the branch in Python and the other one is never built: a dense model carries no MoE
arithmetic, a GQA model no MLA projections, a flash-attention plan no materialized softmax.
When the flag is traced (the model is a ``jit`` argument, or batched), they blend both
branches with the same result. Values, not formulas, differ between the two paths.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def known(x) -> bool:
    """True when ``x`` is a scalar whose value is known while tracing."""
    return not isinstance(x, jax.core.Tracer) and np.ndim(x) == 0


def weight(pred):
    """``1.0`` where ``pred`` holds, else ``0.0`` (a Python float when ``pred`` is known)."""
    if known(pred):
        return 1.0 if bool(pred) else 0.0
    return jnp.where(pred, 1.0, 0.0)


def branch(pred, if_true: Callable[[], Any], if_false: Callable[[], Any]):
    """``where(pred, if_true(), if_false())`` for arrays, deciding in Python when known."""
    if known(pred):
        return if_true() if bool(pred) else if_false()
    return jnp.where(pred, if_true(), if_false())


def mix(w, if_one: Callable[[], Any], if_zero: Callable[[], Any]):
    """``w * if_one() + (1 - w) * if_zero()`` for a 0/1 weight ``w``; any value type with
    ``+`` and ``*`` (arrays, Kernels, Comm). Builds only one side when ``w`` is known."""
    if known(w):
        return if_one() if float(w) == 1.0 else if_zero() if float(w) == 0.0 else (
            if_one() * w + if_zero() * (1.0 - w))
    return if_one() * w + if_zero() * (1.0 - w)

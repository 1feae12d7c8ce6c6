"""Choices between model blocks, made at trace time when the structure decides them.

Under ``jit`` every ``jnp`` operation is staged, even on constants, so a ``jnp.where`` on a
model flag keeps both branches in the compiled graph. When the
:class:`~cpo_opt.model.structure.Structure` decides a choice (its field is ``True`` or
``False``), these helpers pick the branch in Python and the other one is never built: a dense
model carries no MoE arithmetic, a GQA model no MLA projections, a flash-attention plan no
materialized softmax. When the field is ``None`` (the choice is data: the leaf is traced or
batched), they blend both branches by the leaf's value with the same result. Values, not
formulas, differ between the two paths.

``static`` below is always a structure field (``bool | None``); ``pred`` the traced condition
used only when it is ``None``. A weight returned by :func:`weight` is a Python float exactly
when the structure decided it, which :func:`decided` tests (so :func:`mix` and
``layer_costs._GemmTable.add`` can drop the absent side).

:func:`known` remains for choices that are not structure: a plan switch that is a Python
number inside a traced function (``plan.dispatcher`` in ``layer_costs.ep_moe_layer``: the
relaxed model blends it, the exact scorer fixes it), decided in Python when it is one.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def known(x) -> bool:
    """True when ``x`` is a scalar whose value is known while tracing."""
    return not isinstance(x, jax.core.Tracer) and np.ndim(x) == 0


def decided(w) -> bool:
    """True when the 0/1 weight ``w`` is a Python number (a structure decided it)."""
    return isinstance(w, (bool, int, float))


def weight(static: bool | None, pred):
    """``1.0``/``0.0`` (Python floats) as ``static`` says; when it is ``None``,
    ``where(pred, 1.0, 0.0)``."""
    if static is not None:
        return 1.0 if static else 0.0
    return jnp.where(pred, 1.0, 0.0)


def branch(static: bool | None, pred, if_true: Callable[[], Any], if_false: Callable[[], Any]):
    """``if_true()`` or ``if_false()`` as ``static`` says; when it is ``None``,
    ``where(pred, if_true(), if_false())``."""
    if static is not None:
        return if_true() if static else if_false()
    return jnp.where(pred, if_true(), if_false())


def mix(w, if_one: Callable[[], Any], if_zero: Callable[[], Any]):
    """``w * if_one() + (1 - w) * if_zero()`` for a 0/1 weight ``w``; any value type with
    ``+`` and ``*`` (arrays, Kernels, Comm). Builds only one side when ``w`` is
    :func:`decided` (a Python 0 or 1)."""
    if decided(w):
        return if_one() if float(w) == 1.0 else if_zero() if float(w) == 0.0 else (
            if_one() * w + if_zero() * (1.0 - w))
    return if_one() * w + if_zero() * (1.0 - w)

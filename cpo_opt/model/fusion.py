"""Values the compiled exact model computes once and every consumer reads.

The model is elementwise over a batch of plans, and XLA's CPU compiler fuses elementwise
work by copying a cheap producer into each consumer's fused loop (``InstructionFusion`` may
duplicate any instruction it does not count as expensive). A value that feeds many
:class:`~cpo_opt.model.step.StepTime` fields (a block's kernels, a pipeline rank's times) is
then recomputed in every output's loop: XLA's cost analysis of ``cpo-opt bench``'s program
counted 14.1 kflop per dense plan with every field returned against 6.9 kflop for the step
time and memory alone (docs/speed.md).

Dividing by a traced one is exact (``x / 1 == x`` in IEEE arithmetic) and a division is one
of the instructions XLA will not duplicate into several consumers, so each value marked here
is computed once, stored, and read back by every consumer. The one is a ``stop_gradient``, so
derivatives are untouched. The step stores only when asked (``every_field=True``, the bench)
and only in the exact model: stored values are live buffers, and the searches and sweeps of
``reproduce`` peaked 3.5 GB higher with them (docs/speed.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def unit(plan):
    """A traced 1 per plan (``tp / tp``, tp >= 1), outside differentiation."""
    return jax.lax.stop_gradient(plan.tp / plan.tp)


def materialize(value, one):
    """``value`` (an array, a frozen dataclass of arrays, a tuple, list or dict of those)
    divided leaf by leaf by ``one`` (:func:`unit`); Python numbers (the structure's static
    zeros) pass unchanged, so blocks a structure leaves out stay out."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, dict):
        return {k: materialize(v, one) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(materialize(v, one) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(materialize(v, one) for v in value)
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value, **{f.name: materialize(getattr(value, f.name), one)
                                             for f in dataclasses.fields(value)})
    # in the value's own precision: a float32 one would turn a weakly typed float64 value
    # into float32
    return value / jnp.asarray(one, dtype=jnp.result_type(value))

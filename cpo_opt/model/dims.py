"""Derived sizes of one plan: parallel groups, tokens per GPU and layers per pipeline rank.

Everything the cost modules share is computed once here, from the plan's degrees as numbers
(they may be non-integer in the relaxed model). Notation used across the cost modules:

* ``tokens``: tokens one TP rank's GEMMs process per micro-batch, ``b s / cp``.
* ``tokens_sp``: tokens per GPU in the sequence-parallel region, ``b s / (cp tp_sp)`` with
  ``tp_sp = tp`` under sequence parallelism, else 1. MoE layers always dispatch SP-split tokens
  ``b s / (cp tp)`` (Megatron requires SP for MoE with TP).
* ``dp``: ``working_gpus / (tp cp pp)``; the working GPUs are all of the cluster under
  contiguous placement and those the aligned placement uses otherwise
  (:func:`cpo_opt.model.fabric.fill`, kept as ``fill``).
* ``microbatches``: ``global_batch / (micro_batch dp)``.
* ``layers_rank``: layers of the largest even stage times ``vpp``, ``vpp ceil(L / (pp vpp))``,
  of which ``moe_rank = min(layers_rank, L_moe)`` are MoE layers (worst case). The pipeline
  layout proper (first, middle and last rank, uneven stages) is
  :func:`cpo_opt.model.pipeline.layout`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from cpo_opt.model import fabric
from cpo_opt.model import smooth
from cpo_opt.model import transformer
from cpo_opt.model.config import Model, Plan, System
from cpo_opt.model.structure import DYNAMIC, Structure, resolve
from cpo_opt.model.switch import branch, weight


@dataclasses.dataclass(frozen=True)
class Dims:
    """Derived sizes (all numbers, see module docstring)."""

    dp: object
    edp: object
    microbatches: object
    tp_sp: object
    tokens: object
    tokens_sp: object
    tokens_moe: object
    layers_rank: object
    moe_rank: object
    dense_rank: object
    is_moe: object
    dqk: object
    dv: object
    fill: fabric.Fill = None
    """Working GPUs per domain and in all (:func:`cpo_opt.model.fabric.fill`)."""
    structure: Structure = DYNAMIC
    """The (resolved) structure the sizes were computed for; the functions that take ``d``
    and no ``structure`` read its model fields (``moe``, ``mla``, ``shared_experts``).
    (Default for a hand-built ``Dims``: every choice blended.)"""


def dims(model: Model, system: System, plan: Plan, temperature: float = 0.0,
         structure: Structure | None = None) -> Dims:
    """Compute :class:`Dims` for one (model, system, plan); ``structure``: the static blocks
    (default: :func:`~cpo_opt.model.structure.resolve` from the concrete leaves)."""
    s = resolve(structure, model, plan)
    at = fabric.fill(system, plan, temperature)
    dp = at.world / (plan.tp * plan.cp * plan.pp)
    edp = plan.tp * plan.cp * dp / (plan.etp * plan.ep)
    microbatches = plan.global_batch / (plan.micro_batch * dp)
    sp = plan.sequence_parallel
    tp_sp = 1.0 + sp * (plan.tp - 1.0)
    tokens = plan.micro_batch * model.seq_len / plan.cp
    per_stage = smooth.ceil(model.layers / (plan.pp * plan.vpp), temperature)
    layers_rank = plan.vpp * per_stage
    l_moe = transformer.moe_layers(model, s)
    moe_rank = branch(s.moe, model.experts > 0,
                      lambda: smooth.smin(layers_rank, jnp.maximum(l_moe, 1e-9), temperature),
                      lambda: 0.0 * layers_rank)
    return Dims(
        dp=dp,
        edp=edp,
        microbatches=microbatches,
        tp_sp=tp_sp,
        tokens=tokens,
        tokens_sp=tokens / tp_sp,
        tokens_moe=tokens / plan.tp,
        layers_rank=layers_rank,
        moe_rank=moe_rank,
        dense_rank=layers_rank - moe_rank,
        is_moe=weight(s.moe, model.experts > 0),
        dqk=transformer.qk_dim(model, s),
        dv=transformer.v_dim(model, s),
        fill=at,
        structure=s,
    )

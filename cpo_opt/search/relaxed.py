"""The relaxed objective: the exact model's formulas over continuous plan degrees and hardware.

Variables ``z`` (one vector per search start):

* ``log2`` of each parallel degree in :data:`DEGREES` (``tp, pp, cp, ep, etp, vpp,
  micro_batch``); ``dp = gpus / (tp cp pp)`` and the micro-batch count follow continuously;
* natural ``log`` of each free hardware field (file units).

Box bounds (:func:`bounds`) are enforced by projection after every step (style rule 6); the
coupled rules of SPEC.md become smooth penalties on their log-excess:

    tp cp pp <= gpus,  ep etp pp <= gpus,  pp vpp <= layers,  micro_batch dp <= global_batch,
    vpp > 1 only with pp > 1,  memory <= HBM,  every fabric limit (reach, radix, escape
    bandwidth, power budget; :mod:`cpo_opt.model.fabric_cost`)

The objective is ``log(step_time) + PENALTY * sum(max(excess, 0)^2)`` (a squared hinge: zero
inside the feasible set, continuously differentiable at its edge), where ``step_time`` is
:func:`cpo_opt.model.step.step_time` at ``temperature = T`` (the same formulas as the exact model
with max/min/ceil/domain-fit smoothed, :mod:`cpo_opt.model.smooth`). Recompute and ZeRO stay discrete: each search start holds one
combination. ``T`` is annealed during the search; at integer points and ``T -> 0`` the
relaxed objective equals ``log`` of the exact step time (tested).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from cpo_opt.inputs import schema
from cpo_opt.model import fabric_cost
from cpo_opt.search import lattice
from cpo_opt.model.config import Model, Plan, System
from cpo_opt.model.structure import Structure
from cpo_opt.search.space import SearchSpace, log_bounds
from cpo_opt.model.step import step_time

DEGREES = ("tp", "pp", "cp", "ep", "etp", "vpp", "micro_batch")
PENALTY = 100.0
"""Weight of a constraint's squared log-excess relative to ``log(step_time)``: exceeding HBM
by 10% costs as much as a 2.7x slower step, so the optimum sits inside the feasible region."""


def bounds(space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of ``z`` (log2 degrees, then log hardware)."""
    m, moe = space.model.values["model"], space.model.values.get("model.moe")
    gpus = int(space.system.values["cluster"]["gpus"])
    hi = {
        "tp": min(m["heads"], m["kv_heads"], lattice.MAX_TP, gpus),
        "pp": min(m["layers"], gpus),
        "cp": min(lattice.MAX_CP, gpus, m["seq_len"]),
        "ep": moe["experts"] if moe else 1,
        "etp": lattice.MAX_ETP if moe else 1,
        "vpp": lattice.MAX_VPP,
        "micro_batch": lattice.MAX_MICRO_BATCH,
    }
    lo = np.zeros(len(DEGREES))
    up = np.log2([float(hi[d]) for d in DEGREES])
    lb = log_bounds(space)
    return np.concatenate([lo, lb[:, 0]]), np.concatenate([up, lb[:, 1]])


RELAXED_FIXED = ("overlap_tp", "overlap_ep", "overlap_dp", "cuda_graphs", "dispatcher",
                 "recompute_norm_act", "recompute_mla_up", "bf16_moments",
                 "offload_optimizer", "offload_expert_act", "layout_balanced",
                 "bf16_main_grads", "fp8_param_gather", "ddp_bucket", "fp8_dispatch",
                 "fp8_output_layer", "fp8_recipe")
"""Software options the relaxed model takes from the stack (``fixed``); placement stays
contiguous, the schedule 1F1B and low-precision storage off (their rules are discrete: the
rounding and the exact polish try them)."""


def plan_of(z, global_batch, recompute, zero, fp8, flash, fixed=()) -> Plan:
    """The continuous :class:`Plan` at ``z`` (degrees ``2 ** z``), with the stack's
    software options ``fixed`` (``(plan field, code)`` pairs, :data:`RELAXED_FIXED`)."""
    d = {name: 2.0 ** z[i] for i, name in enumerate(DEGREES)}
    one = jnp.ones_like(z[0])
    opt = {k: 0.0 for k in RELAXED_FIXED}
    opt["overlap_dp"] = 1.0
    opt.update({k: v for k, v in dict(fixed).items() if k in RELAXED_FIXED})
    return Plan(
        tp=d["tp"], pp=d["pp"], cp=d["cp"], ep=d["ep"], etp=d["etp"], vpp=d["vpp"],
        micro_batch=d["micro_batch"], global_batch=one * global_batch,
        sequence_parallel=one, recompute=one * recompute, zero=one * zero,
        fp8=one * fp8, overlap_p2p=jnp.clip(d["vpp"] - 1.0, 0.0, 1.0),
        flash_attention=one * flash, placement=0.0 * one, perfect_balance=0.0 * one,
        schedule=0.0 * one, low_precision_storage=0.0 * one,
        first_stage_layers=-1.0 * one, last_stage_layers=-1.0 * one,
        **{k: one * v for k, v in opt.items()})


def objective(z, recompute, zero, temperature, model: Model, system: System, global_batch,
              fp8, flash, power_budget_w, free: tuple[str, ...],
              structure: Structure | None = None, fixed=()):
    """Relaxed objective at ``z`` (see module docstring); also returns the step time.

    Everything but ``free`` (the names of the free hardware fields), ``structure`` (the
    static blocks, :func:`cpo_opt.model.step.step_time`) and ``fixed`` (the stack's options,
    :func:`plan_of`) may be traced.
    """
    n = len(DEGREES)
    plan = plan_of(z, global_batch, recompute, zero, fp8, flash, fixed)
    system = schema.with_fields(system, free, [jnp.exp(z[n + j]) for j in range(len(free))])
    r = step_time(model, system, plan, temperature, stacked=True, structure=structure)
    lg = {name: z[i] for i, name in enumerate(DEGREES)}
    log2_gpus = jnp.log2(system.gpus)
    dp_log = log2_gpus - lg["tp"] - lg["cp"] - lg["pp"]
    excess = [
        -dp_log,                                                     # tp cp pp <= gpus
        lg["ep"] + lg["etp"] + lg["pp"] - log2_gpus,                 # ep etp <= gpus / pp
        lg["pp"] + lg["vpp"] - jnp.log2(model.layers),               # pp vpp <= layers
        lg["micro_batch"] + dp_log - jnp.log2(global_batch),         # >= 1 micro-batch
        lg["vpp"] * (1.0 - jnp.clip(lg["pp"], 0.0, 1.0)),            # vpp > 1 needs pp > 1
        jnp.log(r.memory.total / system.gpu.hbm_bytes),              # fits in HBM
    ]
    excess += [jnp.log1p(jnp.maximum(v, -0.999)) for v in
               fabric_cost.violations(system, power_budget_w).values()]
    penalty = sum(jnp.maximum(e, 0.0) ** 2 for e in excess)
    return jnp.log(r.step_time_s) + PENALTY * penalty, r.step_time_s

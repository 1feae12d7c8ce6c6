"""The discrete plan space: every valid plan of a model on a system, as numpy columns.

The search space (the same for ``optimize --exhaustive``, the rounding of the gradient search
and ``bench``) is every combination of

* ``tp``, ``cp``, ``ep``, ``etp``: powers of two (``tp <= 128``, ``cp <= 64``, ``etp <= 8``);
* ``pp``: any divisor of ``gpus / (tp cp)`` (stages may be uneven, as in Megatron);
* ``vpp``: 1..8 (1 when ``pp == 1``);
* ``micro_batch``: powers of two up to 16 dividing ``global_batch / dp``;
* ``recompute``: none, selective, full; ``zero``: 0..3;

that satisfies every plan rule of SPEC.md (the same rules :mod:`cpo_opt.inputs.plan_rules` applies to
files; a test checks the two agree). ``sequence_parallel`` is on when ``tp > 1``; the dtype,
attention kernel and overlap switches are fixed by the caller.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from cpo_opt.inputs import InputError, schema
from cpo_opt.model.config import Plan

COLUMNS = ("tp", "cp", "pp", "vpp", "ep", "etp", "micro_batch", "recompute", "zero")
MAX_TP, MAX_CP, MAX_ETP, MAX_VPP, MAX_MICRO_BATCH = 128, 64, 8, 8, 16


def powers_of_two(limit: int) -> np.ndarray:
    """``1, 2, 4, ...`` up to ``limit``."""
    return 2 ** np.arange(int(np.log2(max(limit, 1))) + 1)


MAX_PLAN_ROWS = 2**24
"""Most rows any stage of :func:`enumerate_plans` may hold (about 16.8M; ~1.5 GB of int64
columns). The largest shipped model on 393,216 GPUs peaks at 6.0M rows; the guard runs
before each stage allocates, so an oversized space is a clear error, not gigabytes."""

MAX_DIVISOR_N = 2**40
"""Largest number :func:`divisors` factors (trial division allocates ``sqrt(n)`` numbers:
8 MB at this limit; ``cluster.gpus`` is capped far lower by ``schema.RANGES``)."""


class PlanSpaceTooLarge(InputError):
    """The plan space would exceed :data:`MAX_PLAN_ROWS` rows (exit 2, one line)."""


def divisors(n: int) -> np.ndarray:
    """All positive divisors of ``n``, ascending."""
    if not 1 <= n <= MAX_DIVISOR_N:
        raise PlanSpaceTooLarge(f"cluster.gpus: {n} GPUs is outside [1, {MAX_DIVISOR_N}]; "
                                "the plan space cannot be built (--set cluster.gpus=N)")
    d = np.arange(1, math.isqrt(int(n)) + 1)
    d = d[n % d == 0]
    return np.unique(np.concatenate([d, n // d]))


def _cross(table: dict[str, np.ndarray], name: str, values: np.ndarray) -> dict:
    """Cartesian product of the rows of ``table`` with ``values`` as a new column."""
    n, k = len(next(iter(table.values()))) if table else 1, len(values)
    if n * k > MAX_PLAN_ROWS:
        raise PlanSpaceTooLarge(
            f"plan space: {n * k:,} candidate plans at the {name!r} stage, more than the "
            f"{MAX_PLAN_ROWS:,} the exhaustive search holds in memory; narrow it with a "
            "smaller cluster (--set cluster.gpus=N) or drop --exhaustive (the gradient "
            "search does not enumerate)")
    out = {c: np.repeat(v, k) for c, v in table.items()}
    out[name] = np.tile(values, n)
    return out


def _keep(table: dict[str, np.ndarray], mask: np.ndarray) -> dict:
    return {c: v[mask] for c, v in table.items()}


def valid_mask(cols: dict[str, np.ndarray], model_values: dict, system_values: dict
               ) -> np.ndarray:
    """Which rows of plan columns satisfy every plan rule of SPEC.md (vectorized).

    ``cols`` holds integer arrays for :data:`COLUMNS` and ``global_batch``; ``dp`` is derived.
    The same rules as :mod:`cpo_opt.inputs.plan_rules` (a test checks they agree).
    """
    m, moe = model_values["model"], model_values.get("model.moe")
    gpus = int(system_values["cluster"]["gpus"])
    tp, cp, pp, vpp = cols["tp"], cols["cp"], cols["pp"], cols["vpp"]
    ep, etp, mb, gb = cols["ep"], cols["etp"], cols["micro_batch"], cols["global_batch"]
    grid = tp * cp * pp
    ok = (tp >= 1) & (cp >= 1) & (pp >= 1) & (vpp >= 1) & (ep >= 1) & (etp >= 1) & (mb >= 1)
    ok &= gpus % np.maximum(grid, 1) == 0
    dp = gpus // np.maximum(grid, 1)
    ok &= (m["heads"] % tp == 0) & (m["kv_heads"] % tp == 0)
    if moe is None or moe["dense_layers"] > 0:
        ok &= m["ffn_hidden"] % tp == 0
    if moe is None:
        ok &= (ep == 1) & (etp == 1)
    else:
        ok &= (moe["experts"] % ep == 0) & (moe["expert_ffn_hidden"] % etp == 0)
        ok &= (tp * cp * dp) % (etp * ep) == 0
    ok &= m["seq_len"] % cp == 0
    ok &= ((m["seq_len"] // cp) % tp == 0) | (tp == 1)
    ok &= ((vpp == 1) | (pp > 1)) & (pp * vpp <= m["layers"])
    ok &= gb % np.maximum(mb * dp, 1) == 0
    return ok


def in_space(cols: dict[str, np.ndarray], model_values: dict, system_values: dict
             ) -> np.ndarray:
    """Rows inside the search space: :func:`valid_mask` plus the space's own bounds (powers
    of two, the ``MAX_*`` caps, recompute and ZeRO codes), as :func:`enumerate_plans` builds
    it, so any search returns a plan the exhaustive search also scores."""
    def pow2(x, cap):
        return (x >= 1) & (x <= cap) & ((x & (x - 1)) == 0)

    moe = model_values.get("model.moe")
    ok = valid_mask(cols, model_values, system_values)
    ok &= pow2(cols["tp"], MAX_TP) & pow2(cols["cp"], MAX_CP) & pow2(cols["etp"], MAX_ETP)
    ok &= pow2(cols["ep"], moe["experts"] if moe else 1)
    ok &= pow2(cols["micro_batch"], MAX_MICRO_BATCH) & (cols["vpp"] <= MAX_VPP)
    ok &= np.isin(cols["recompute"], (0, 1, 2)) & np.isin(cols["zero"], (0, 1, 2, 3))
    return ok


def enumerate_plans(model_values: dict, system_values: dict, global_batch: int,
                    recompute=(0, 1, 2), zero=(0, 1, 2, 3)) -> dict[str, np.ndarray]:
    """Every valid plan as int64 columns (:data:`COLUMNS` plus ``dp``, ``global_batch``).

    Built as a staged cartesian product that prunes early, then checked once more with
    :func:`valid_mask` so that enumeration and rounding share one rule set.

    Args:
      model_values, system_values: ``ModelSpec.values`` and ``SystemSpec.values``.
      global_batch: sequences per step (fixed for the whole space).
      recompute, zero: the codes to include.
    """
    m, moe = model_values["model"], model_values.get("model.moe")
    gpus = int(system_values["cluster"]["gpus"])
    seq, layers = int(m["seq_len"]), int(m["layers"])
    t: dict[str, np.ndarray] = {}
    tp = powers_of_two(min(MAX_TP, gpus))
    t = _cross(t, "tp", tp[(m["heads"] % tp == 0) & (m["kv_heads"] % tp == 0)])
    t = _cross(t, "cp", powers_of_two(min(MAX_CP, gpus)))
    t = _keep(t, (seq % t["cp"] == 0) & (gpus % (t["tp"] * t["cp"]) == 0))
    pps = divisors(gpus)
    t = _cross(t, "pp", pps[pps <= layers])
    t = _keep(t, gpus % (t["tp"] * t["cp"] * t["pp"]) == 0)
    t = _cross(t, "vpp", np.arange(1, MAX_VPP + 1))
    t = _keep(t, ((t["vpp"] == 1) | (t["pp"] > 1)) & (t["pp"] * t["vpp"] <= layers))
    if moe is None:
        t["ep"] = np.ones_like(t["tp"])
        t["etp"] = np.ones_like(t["tp"])
    else:
        ep = powers_of_two(moe["experts"])
        t = _cross(t, "ep", ep[moe["experts"] % ep == 0])
        t = _cross(t, "etp", powers_of_two(MAX_ETP))
        dp = gpus // (t["tp"] * t["cp"] * t["pp"])
        t = _keep(t, (t["tp"] * t["cp"] * dp) % (t["etp"] * t["ep"]) == 0)
    t = _cross(t, "micro_batch", powers_of_two(MAX_MICRO_BATCH))
    t["global_batch"] = np.full_like(t["tp"], global_batch)
    t = _keep(t, valid_mask(t, model_values, system_values))
    t = _cross(t, "recompute", np.asarray(recompute))
    t = _cross(t, "zero", np.asarray(zero))
    t["dp"] = gpus // (t["tp"] * t["cp"] * t["pp"])
    return {c: np.asarray(v, dtype=np.int64) for c, v in t.items()}


def to_plan(columns: dict, fp8: int, flash: int, dtype=None, overlap_tp: int = 0,
            overlap_ep: int = 0, overlap_dp: int = 1, placement: int = 0,
            cuda_graphs: int = 0) -> Plan:
    """Batched :class:`Plan` from lattice columns (numpy or traced arrays), with the Megatron
    default switches (SP when ``tp > 1``, p2p overlap when ``vpp > 1``).

    Inside a traced function, Python-number ``fp8``/``flash``/overlap switches stay Python
    numbers, so blocks they switch off are dropped at trace time."""
    xp = np if all(isinstance(v, np.ndarray) for v in columns.values()) else jnp
    dtype = dtype or (np.float64 if xp is np else None)
    c = {k: xp.asarray(columns[k], dtype=dtype) for k in COLUMNS + ("global_batch",)}
    ones = xp.ones_like(c["tp"]) if xp is np else 1.0
    return Plan(
        tp=c["tp"], pp=c["pp"], cp=c["cp"], ep=c["ep"], etp=c["etp"], vpp=c["vpp"],
        micro_batch=c["micro_batch"], global_batch=c["global_batch"],
        sequence_parallel=xp.where(c["tp"] > 1, 1.0, 0.0) * ones, recompute=c["recompute"],
        zero=c["zero"], fp8=ones * fp8, overlap_tp=ones * overlap_tp,
        overlap_ep=ones * overlap_ep, overlap_p2p=xp.where(c["vpp"] > 1, 1.0, 0.0) * ones,
        overlap_dp=ones * overlap_dp, flash_attention=ones * flash,
        placement=ones * placement, cuda_graphs=ones * cuda_graphs,
        recompute_norm_act=ones * 0.0, recompute_mla_up=ones * 0.0,
        offload_optimizer=ones * 0.0, dispatcher=ones * 0.0,
        perfect_balance=ones * 0.0, offload_expert_act=ones * 0.0,
        schedule=ones * 0.0, low_precision_storage=ones * 0.0, bf16_moments=ones * 0.0)


def plan_values(columns: dict[str, np.ndarray], i: int, dtype: str, attention: str) -> dict:
    """Row ``i`` of the lattice as a plan table (file units) for :func:`plan_from_values`."""
    row = {k: int(v[i]) for k, v in columns.items() if k in COLUMNS or k == "global_batch"}
    inv_rc = {v: k for k, v in schema.RECOMPUTE.items()}
    row["recompute"] = inv_rc[row["recompute"]]
    row["sequence_parallel"] = row["tp"] > 1
    row["dtype"] = dtype
    row["attention"] = attention
    return row

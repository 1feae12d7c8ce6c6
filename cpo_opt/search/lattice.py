"""The discrete plan space: every valid plan of a model on a system, as numpy columns.

The search space (the same for ``optimize --exhaustive``, the rounding of the gradient search
and ``bench``) is every combination of

* ``tp``, ``cp``, ``ep``, ``etp``: powers of two (``tp <= 128``, ``cp <= 64``, ``etp <= 8``);
* ``pp``: any divisor of ``gpus / (tp cp)`` (stages may be uneven, as in Megatron);
* ``vpp``: 1..8 (1 when ``pp == 1``);
* ``micro_batch``: powers of two up to 16 dividing ``global_batch / dp``;
* ``recompute``: none, selective, full; ``zero``: 0..3;

that satisfies every plan rule of SPEC.md (the same rules :mod:`cpo_opt.inputs.plan_rules` applies to
files; a test checks the two agree). ``sequence_parallel`` is on when ``tp > 1``; the dtype and
attention kernel are fixed by the caller.

Software options (:data:`OPTION_COLUMNS`: placement, EP overlap, dispatcher, CUDA graphs,
schedule, low-precision storage, pipeline layout) are columns too when a search chooses them
(:mod:`cpo_opt.inputs.stacks`, ``[search] choose``): ``options`` maps each to the codes to
enumerate, and a row holds a non-default code only where the option applies (aligned
placement where it lays the job out differently, DualPipe where its rules hold, EP overlap
and DeepEP dispatch with expert parallelism, ...: the rules of
:func:`cpo_opt.inputs.plan_rules.applies`), so no two rows are the same plan. Options that
are not columns take the ``fixed`` codes of :func:`to_plan`. Aligned rows derive ``dp`` from
the GPUs the placement works (:func:`cpo_opt.model.fabric.fill`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from cpo_opt.inputs import InputError, schema
from cpo_opt.model.config import Plan

COLUMNS = ("tp", "cp", "pp", "vpp", "ep", "etp", "micro_batch", "recompute", "zero")
MAX_TP, MAX_CP, MAX_ETP, MAX_VPP, MAX_MICRO_BATCH = 128, 64, 8, 8, 16

OPTION_COLUMNS = ("placement", "overlap_ep", "dispatcher", "cuda_graphs", "schedule",
                  "low_precision_storage", "pipeline_layout")
"""Software options a search may enumerate, as numeric codes (``placement`` 0 contiguous / 1
aligned; ``dispatcher`` 0 alltoall / 1 deepep; ``schedule`` 0 1f1b / 1 dualpipe;
``pipeline_layout`` 0 even / 1 balanced; the rest 0 off / 1 on)."""

OPTION_ATTRS = {"pipeline_layout": "layout_balanced"}
"""Option column -> :class:`~cpo_opt.model.config.Plan` field where the names differ."""


def working_gpus(cols: dict, system_values: dict):
    """GPUs each row's placement works (:func:`cpo_opt.model.fabric.fill`, the model's rule).

    Aligned rows depend only on their unit ``max(tp cp, etp ep)``
    (:func:`cpo_opt.model.fabric.placement_unit`), so the rule runs once per distinct unit,
    on host scalars in float64: calling it on row arrays ran every JAX op eagerly on a new
    shape at every stage of every search, each a fresh XLA compilation too small for the
    persistent cache (about 470 s of a 2-core ``reproduce --quick``, cold or warm)."""
    import types
    import jax
    from cpo_opt.model import fabric
    gpus = float(system_values["cluster"]["gpus"])
    n = len(cols["tp"])
    placement = np.asarray(cols.get("placement", np.zeros(n)))
    out = np.full(n, int(gpus), dtype=np.int64)
    aligned = placement > 0
    if not np.any(aligned):
        return out
    sys_ = types.SimpleNamespace(gpus=gpus, scale_up=types.SimpleNamespace(
        domain_size=float(system_values["scale_up"]["domain_size"])))
    units = np.maximum(np.asarray(cols["tp"]) * np.asarray(cols["cp"]),
                       np.asarray(cols["etp"]) * np.asarray(cols["ep"]))[aligned]
    distinct, back = np.unique(units, return_inverse=True)
    with jax.enable_x64(True):
        world = np.asarray([float(fabric.fill(sys_, types.SimpleNamespace(
            tp=float(u), cp=1.0, ep=1.0, etp=1.0, placement=1.0)).world) for u in distinct])
    out[aligned] = np.rint(world[back.reshape(-1)]).astype(np.int64)
    return out


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


def _check_rows(n: int, k: int, name: str) -> None:
    """Refuse a stage of ``n x k`` rows beyond :data:`MAX_PLAN_ROWS` (one line, exit 2)."""
    if n * k > MAX_PLAN_ROWS:
        raise PlanSpaceTooLarge(
            f"plan space: {n * k:,} candidate plans at the {name!r} stage, more than the "
            f"{MAX_PLAN_ROWS:,} the exhaustive search holds in memory; narrow it with a "
            "smaller cluster (--set cluster.gpus=N) or drop --exhaustive (the gradient "
            "search does not enumerate)")


def _cross(table: dict[str, np.ndarray], name: str, values: np.ndarray) -> dict:
    """Cartesian product of the rows of ``table`` with ``values`` as a new column."""
    n, k = len(next(iter(table.values()))) if table else 1, len(values)
    _check_rows(n, k, name)
    out = {c: np.repeat(v, k) for c, v in table.items()}
    out[name] = np.tile(values, n)
    return out


def _keep(table: dict[str, np.ndarray], mask: np.ndarray) -> dict:
    return {c: v[mask] for c, v in table.items()}


def valid_mask(cols: dict[str, np.ndarray], model_values: dict, system_values: dict,
               fp8: int = 0) -> np.ndarray:
    """Which rows of plan columns satisfy every plan rule of SPEC.md (vectorized).

    ``cols`` holds integer arrays for :data:`COLUMNS` and ``global_batch``; ``dp`` is derived.
    The same rules as :mod:`cpo_opt.inputs.plan_rules` (a test checks they agree).
    """
    m, moe = model_values["model"], model_values.get("model.moe")
    tp, cp, pp, vpp = cols["tp"], cols["cp"], cols["pp"], cols["vpp"]
    ep, etp, mb, gb = cols["ep"], cols["etp"], cols["micro_batch"], cols["global_batch"]
    grid = tp * cp * pp
    ok = (tp >= 1) & (cp >= 1) & (pp >= 1) & (vpp >= 1) & (ep >= 1) & (etp >= 1) & (mb >= 1)
    work = working_gpus(cols, system_values)
    ok &= work % np.maximum(grid, 1) == 0
    dp = work // np.maximum(grid, 1)
    if "placement" in cols:  # aligned units nest (the smaller block divides the larger)
        a, b = tp * cp, etp * ep
        ok &= (cols["placement"] == 0) | (np.maximum(a, b) % np.maximum(np.minimum(a, b), 1) == 0)
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
    ok &= (vpp == 1) | (gb // np.maximum(mb * dp, 1) >= pp)  # interleaving: m >= pp
    ok &= option_mask(cols, model_values, system_values, dp, work, fp8)
    return ok


def option_mask(cols: dict, model_values: dict, system_values: dict, dp, work,
                fp8: int = 0) -> np.ndarray:
    """Rows whose option columns hold a non-default code only where the option applies
    (the rules of :func:`cpo_opt.inputs.plan_rules.applies`; aligned placement only where it
    idles GPUs, i.e. lays the job out differently from contiguous placement)."""
    n = len(cols["tp"])
    ok = np.ones(n, dtype=bool)
    moe = model_values.get("model.moe")
    pp, vpp, ep = cols["pp"], cols["vpp"], cols["ep"]
    gpus = int(system_values["cluster"]["gpus"])
    on = {k: np.asarray(cols[k]) > 0 for k in OPTION_COLUMNS if k in cols}
    dual = on.get("schedule", np.zeros(n, dtype=bool))
    if "placement" in on:
        ok &= ~on["placement"] | (work < gpus)
    if "schedule" in on:
        m = cols["global_batch"] // np.maximum(cols["micro_batch"] * dp, 1)
        ok &= ~dual | ((pp >= 2) & (pp % 2 == 0) & (vpp == 1) & (m >= 2 * pp) & (m % 2 == 0))
    has_ep = (ep > 1) if moe is not None else np.zeros(n, dtype=bool)
    if "dispatcher" in on:
        ok &= ~on["dispatcher"] | has_ep
    if "overlap_ep" in on:
        ok &= ~on["overlap_ep"] | (has_ep & ((pp == 1) | (vpp > 1) | dual))
    if "pipeline_layout" in on:
        ok &= ~on["pipeline_layout"] | (pp * vpp >= 2)
    if "low_precision_storage" in on:
        ok &= ~on["low_precision_storage"] | bool(fp8)
    return ok


def without_inapplicable_options(cols: dict, model_values: dict, system_values: dict,
                                 fp8: int = 0) -> dict:
    """``cols`` with every option code that does not apply to its row (a rule of
    :func:`option_mask`) set to the option's default, code 0, as a plan file's inapplicable
    values are switched off (:func:`cpo_opt.inputs.plan_rules.applies`); codes that apply
    are kept. The gradient search's polish changes one or two degrees of a plan at a time:
    without this, a move from (pp 2, vpp 8, balanced layout) to (pp 1, vpp 1) made a plan
    with a balanced layout on one stage, which the rules reject, and the even-layout plan at
    those degrees was three changes away, so the polish never reached it (the tiny study's
    paper figure: plans 5.5-8% slower kept, docs/speed.md). Placement is settled first
    (it sets ``dp``), then the schedule (EP overlap's rule reads it), then the rest."""
    order = dict.fromkeys(("placement", "schedule") + OPTION_COLUMNS)
    present = [k for k in order if k in cols]
    if not present:
        return cols
    out = dict(cols)
    plain = {k: v for k, v in cols.items() if k not in OPTION_COLUMNS}
    grid = np.maximum(cols["tp"] * cols["cp"] * cols["pp"], 1)
    work = working_gpus(cols, system_values)
    for k in present:
        sub = dict(plain, **{k: out[k]})
        if k == "overlap_ep" and "schedule" in out:
            sub["schedule"] = out["schedule"]
        applies = option_mask(sub, model_values, system_values, work // grid, work, fp8)
        out[k] = np.where(applies, out[k], 0)
        if k == "placement":  # the working GPUs of the settled placement
            work = working_gpus(out, system_values)
    return out


def in_space(cols: dict[str, np.ndarray], model_values: dict, system_values: dict,
             fp8: int = 0) -> np.ndarray:
    """Rows inside the search space: :func:`valid_mask` plus the space's own bounds (powers
    of two, the ``MAX_*`` caps, recompute and ZeRO codes), as :func:`enumerate_plans` builds
    it, so any search returns a plan the exhaustive search also scores."""
    def pow2(x, cap):
        return (x >= 1) & (x <= cap) & ((x & (x - 1)) == 0)

    moe = model_values.get("model.moe")
    ok = valid_mask(cols, model_values, system_values, fp8)
    ok &= pow2(cols["tp"], MAX_TP) & pow2(cols["cp"], MAX_CP) & pow2(cols["etp"], MAX_ETP)
    ok &= pow2(cols["ep"], moe["experts"] if moe else 1)
    ok &= pow2(cols["micro_batch"], MAX_MICRO_BATCH) & (cols["vpp"] <= MAX_VPP)
    ok &= np.isin(cols["recompute"], (0, 1, 2)) & np.isin(cols["zero"], (0, 1, 2, 3))
    return ok


TAIL = ("recompute", "zero")
"""The last columns of the plan space: every code of each applies to every plan before them
(no rule ties them to the others), so :func:`enumerate_factors` leaves them uncrossed."""


def enumerate_plans(model_values: dict, system_values: dict, global_batch: int,
                    recompute=(0, 1, 2), zero=(0, 1, 2, 3),
                    options: dict[str, tuple[int, ...]] | None = None,
                    fp8: int = 0) -> dict[str, np.ndarray]:
    """Every valid plan as int64 columns (:data:`COLUMNS` plus ``dp``, ``global_batch`` and
    the enumerated option columns): :func:`expand` of :func:`enumerate_factors`.

    Built as a staged cartesian product that prunes early, then checked once more with
    :func:`valid_mask` so that enumeration and rounding share one rule set.

    Args:
      model_values, system_values: ``ModelSpec.values`` and ``SystemSpec.values``.
      global_batch: sequences per step (fixed for the whole space).
      recompute, zero: the codes to include.
      options: option column -> codes to enumerate (:data:`OPTION_COLUMNS`); ``None`` or
        absent: not a column (contiguous placement, the caller's fixed codes).
      fp8: the space's dtype (low-precision storage applies only to fp8 plans).
    """
    return expand(*enumerate_factors(model_values, system_values, global_batch, recompute,
                                     zero, options, fp8))


def enumerate_factors(model_values: dict, system_values: dict, global_batch: int,
                      recompute=(0, 1, 2), zero=(0, 1, 2, 3),
                      options: dict[str, tuple[int, ...]] | None = None,
                      fp8: int = 0) -> tuple[dict[str, np.ndarray], tuple]:
    """The plan space of :func:`enumerate_plans` as two factors: ``(base, tail)``.

    ``base``: every valid plan before the :data:`TAIL` columns, as int64 columns (``dp``
    included); ``tail``: ``(("recompute", codes), ("zero", codes))``. Plan ``i`` of the
    space is base row ``i // (R Z)`` with recompute ``codes[(i // Z) % R]`` and ZeRO
    ``codes[i % Z]`` (``R``, ``Z``: the code counts), the row order of the full cartesian
    product. The exhaustive search keeps the factors (12x fewer host rows and bytes) and
    builds each plan on the device; the size guard of the full product still applies.
    """
    options = {k: tuple(v) for k, v in (options or {}).items() if len(v) > 0}
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
    if "placement" in options:
        t = _cross(t, "placement", np.asarray(options["placement"]))
    t = _cross(t, "micro_batch", powers_of_two(MAX_MICRO_BATCH))
    t["global_batch"] = np.full_like(t["tp"], global_batch)
    t = _keep(t, valid_mask(t, model_values, system_values, fp8))
    for name in OPTION_COLUMNS:
        if name in options and name != "placement":
            t = _cross(t, name, np.asarray(options[name]))
            t = _keep(t, option_mask(t, model_values, system_values,
                                     *_dp_work(t, system_values), fp8))
    tail = (("recompute", np.asarray(recompute, dtype=np.int64)),
            ("zero", np.asarray(zero, dtype=np.int64)))
    n = len(t["tp"])
    for name, codes in tail:  # the guard of the full product, stage by stage
        _check_rows(n, len(codes), name)
        n *= len(codes)
    t["dp"] = _dp_work(t, system_values)[0]
    return {c: np.asarray(v, dtype=np.int64) for c, v in t.items()}, tail


def tail_size(tail) -> int:
    """Plans per base row: the product of the tail's code counts."""
    return math.prod(len(codes) for _, codes in tail)


def expand(base: dict[str, np.ndarray], tail) -> dict[str, np.ndarray]:
    """The full plan columns of :func:`enumerate_factors`' factors (the cartesian product in
    the order :func:`enumerate_factors` states; ``dp`` last, as before)."""
    t = {k: v for k, v in base.items() if k != "dp"}
    for name, codes in tail:
        t = _cross(t, name, codes)
    t["dp"] = np.repeat(base["dp"], tail_size(tail))
    return {c: np.asarray(v, dtype=np.int64) for c, v in t.items()}


def split_index(index, tail):
    """``(base row, {name: code})`` of plans ``index`` of the factored space: the codes are
    taken last-name-fastest, the order of the full cartesian product (:func:`expand`).
    ``tail``: ``(name, codes)`` pairs; numpy or traced arrays alike (the host's
    :func:`tail_rows` and the device's ``search.score.score_range`` decode with this)."""
    q = index
    codes_at = {}
    for name, codes in reversed(tuple(tail)):
        codes_at[name] = codes[q % codes.shape[0]]
        q = q // codes.shape[0]
    return q, codes_at


def tail_rows(base: dict[str, np.ndarray], tail, index: np.ndarray) -> dict[str, np.ndarray]:
    """Plans ``index`` of the factored space as columns (what :func:`expand` holds at those
    rows), without expanding the rest."""
    q, codes_at = split_index(np.asarray(index, dtype=np.int64),
                              [(name, np.asarray(codes)) for name, codes in tail])
    out = {k: v[q] for k, v in base.items() if k != "dp"}
    out.update({name: codes_at[name] for name, _ in tail})
    out["dp"] = base["dp"][q]
    return out


def _dp_work(t: dict, system_values: dict):
    """``(dp, working GPUs)`` of each row."""
    work = working_gpus(t, system_values)
    return work // (t["tp"] * t["cp"] * t["pp"]), work


def to_plan(columns: dict, fp8: int, flash: int, dtype=None, overlap_tp: int = 0,
            overlap_ep: int = 0, overlap_dp: int = 1, placement: int = 0,
            cuda_graphs: int = 0, fixed: dict[str, float] | None = None) -> Plan:
    """Batched :class:`Plan` from lattice columns (numpy or traced arrays), with the Megatron
    default switches (SP when ``tp > 1``, p2p overlap when ``vpp > 1``).

    Software options come from the option columns where present, else from ``fixed``
    (``{plan field: code}``, a stack's defaults: :func:`cpo_opt.search.space.fixed_options`),
    else from the keyword switches. Values that do not apply to a row are switched off the
    way a plan file's are (:func:`cpo_opt.inputs.plan_rules.applies`): EP overlap without
    expert parallelism or, with ``pp > 1``, without interleaving or DualPipe; DualPipe where
    its rules fail; low-precision storage in bf16.

    Inside a traced function, Python-number ``fp8``/``flash``/overlap switches stay Python
    numbers, so blocks they switch off are dropped at trace time."""
    xp = np if all(isinstance(v, np.ndarray) for v in columns.values()) else jnp
    dtype = dtype or (np.float64 if xp is np else None)
    c = {k: xp.asarray(columns[k], dtype=dtype) for k in COLUMNS + ("global_batch",)}
    ones = xp.ones_like(c["tp"]) if xp is np else 1.0
    opts = {"overlap_tp": overlap_tp, "overlap_ep": overlap_ep, "overlap_dp": overlap_dp,
            "placement": placement, "cuda_graphs": cuda_graphs}
    opts.update(fixed or {})
    for name in OPTION_COLUMNS:
        if name in columns:
            opts[OPTION_ATTRS.get(name, name)] = xp.asarray(columns[name], dtype=dtype)
    opt = {k: ones * v for k, v in opts.items()}
    dual = opt.get("schedule", 0.0 * ones)
    if "schedule" in opt:  # DualPipe where its rules hold (a stack default elsewhere: off)
        m = c["global_batch"] / (c["micro_batch"] * _dp_of(c, columns, xp))
        ok = ((c["pp"] >= 2) & (xp.remainder(c["pp"], 2.0) == 0) & (c["vpp"] == 1)
              & (m >= 2 * c["pp"]) & (xp.remainder(m, 2.0) == 0))
        dual = xp.where(ok, dual, 0.0)
        opt["schedule"] = dual
    if "overlap_ep" in opt:
        ok = (c["ep"] > 1) & ((c["pp"] == 1) | (c["vpp"] > 1) | (dual > 0))
        opt["overlap_ep"] = xp.where(ok, opt["overlap_ep"], 0.0)
    if "low_precision_storage" in opt:
        opt["low_precision_storage"] = opt["low_precision_storage"] * (ones * fp8)
    base = dict(recompute_norm_act=0.0, recompute_mla_up=0.0, offload_optimizer=0.0,
                dispatcher=0.0, perfect_balance=0.0, offload_expert_act=0.0, schedule=0.0,
                low_precision_storage=0.0, bf16_moments=0.0, layout_balanced=0.0,
                first_stage_layers=-1.0, last_stage_layers=-1.0, overlap_p2p=None,
                bf16_main_grads=0.0, fp8_param_gather=0.0, ddp_bucket=0.0, fp8_dispatch=0.0,
                fp8_output_layer=0.0, fp8_recipe=0.0)
    fields = {k: ones * v for k, v in base.items() if v is not None}
    fields.update(opt)
    if "overlap_p2p" not in opt:
        fields["overlap_p2p"] = xp.where(c["vpp"] > 1, 1.0, 0.0) * ones
    return Plan(
        tp=c["tp"], pp=c["pp"], cp=c["cp"], ep=c["ep"], etp=c["etp"], vpp=c["vpp"],
        micro_batch=c["micro_batch"], global_batch=c["global_batch"],
        sequence_parallel=xp.where(c["tp"] > 1, 1.0, 0.0) * ones, recompute=c["recompute"],
        zero=c["zero"], fp8=ones * fp8, flash_attention=ones * flash, **fields)


def _dp_of(c: dict, columns: dict, xp):
    """``dp`` of each row: the ``dp`` column (:func:`enumerate_plans` and the searches'
    columns carry it; it depends on the placement)."""
    if "dp" not in columns:
        raise ValueError("to_plan: rows that may run DualPipe need the 'dp' column")
    return xp.asarray(columns["dp"], dtype=c["tp"].dtype)


OPTION_VALUES = {
    "placement": {0: "contiguous", 1: "aligned"},
    "dispatcher": {0: "alltoall", 1: "deepep"},
    "schedule": {0: "1f1b", 1: "dualpipe"},
    "pipeline_layout": {0: "even", 1: "balanced"},
}
"""Option codes -> plan-file values (booleans for the rest)."""


def plan_values(columns: dict[str, np.ndarray], i: int, dtype: str, attention: str) -> dict:
    """Row ``i`` of the lattice as a plan table (file units) for :func:`plan_from_values`
    (option columns included: they become explicit plan keys)."""
    row = {k: int(v[i]) for k, v in columns.items() if k in COLUMNS or k == "global_batch"}
    inv_rc = {v: k for k, v in schema.RECOMPUTE.items()}
    row["recompute"] = inv_rc[row["recompute"]]
    row["sequence_parallel"] = row["tp"] > 1
    row["dtype"] = dtype
    row["attention"] = attention
    for name in OPTION_COLUMNS:
        if name in columns:
            code = int(columns[name][i])
            row[name] = OPTION_VALUES[name][code] if name in OPTION_VALUES else bool(code)
    return row

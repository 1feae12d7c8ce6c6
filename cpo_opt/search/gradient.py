"""Gradient search: multi-start Adam on the relaxed model, rounding, exact re-scoring.

1. **Descent.** ``starts`` random points in the box of :func:`relaxed.bounds`, each holding
   one (recompute, ZeRO) combination, run ``steps`` Adam steps on the relaxed objective
   (:mod:`cpo_opt.search.relaxed`) while the temperature anneals geometrically from
   ``t_start`` to ``t_end``. All starts run in one ``vmap`` inside one ``lax.scan``: one
   compilation.
2. **Rounding.** Every start's end point is rounded to the lattice: each power-of-two degree
   to the two powers bracketing it, ``pp`` to the two divisors of the cluster bracketing it,
   ``vpp`` to the two integers, integer hardware fields to floor/ceil (continuous ones kept),
   each combination with every (recompute, ZeRO) pair; rows that break a plan rule are
   dropped (:func:`cpo_opt.search.lattice.valid_mask`).
3. **Exact re-scoring.** All rounded neighbours are scored by the exact model in one vmapped
   batch; then a beam polish re-scores, for each of the ``beam`` best distinct plans, every
   plan that differs from it in one or two degrees (each changed degree over its whole axis: a
   two-dimensional line search, ~20k rows per plan, every recompute/ZeRO pair; an exchange of
   ``tp`` and ``cp`` and the pipeline's collapse, ``pp`` to 1 with ``vpp`` following, count as
   one move each), round after round, until the beam holds only plans whose neighbourhoods
   were already scored. The wide
   neighbourhood matters: the relaxed landscape has pipeline staircases, and on the study's
   Config2/Passage the descent ends at (pp 9, vpp 8, cp 2) while the optimum is (tp 2, pp 1);
   one-step moves stopped 11% short there, line searches reach it. With free hardware
   fields, once the beam's plans are settled the polish also moves the hardware of each beam
   row (each field and pair of fields scaled by ``2 ** (+-1/64 ... +-1)`` and across a grid
   of its bounds, plan kept), then settles the plans again at the new point, and so on: the
   relaxed descent tends to stop inside a power budget (the penalty is one-sided), this walks
   onto it (99.3-99.9% of the budget on the benchmark and study co-design cases).

``evaluations`` counts relaxed objective-and-gradient evaluations plus exact evaluations;
``search_wall_s`` includes compilation.
"""

from __future__ import annotations

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cpo_opt.model.structure import Structure
from cpo_opt.search import lattice
from cpo_opt.search.brief_jit import brief_jit
from cpo_opt.search.batching import SMALL_BATCH
from cpo_opt.search import relaxed
from cpo_opt.search import score as S
from cpo_opt.search.space import INTEGER_FIELDS, SearchResult, SearchSpace

COMBOS = tuple(itertools.product((0, 1, 2), (0, 1, 2, 3)))  # (recompute, zero)
POW2 = ("tp", "cp", "ep", "etp", "micro_batch")


def adam_scan(objective, z0, recompute, zero, lo, hi, temps, lr):
    """Adam on ``objective(z, recompute, zero, temperature) -> (value, relaxed step time)``
    for every start at once: ``vmap`` over the starts of one ``lax.scan`` over the annealed
    ``temps``, each step clipped to the box ``[lo, hi]`` and non-finite gradient entries
    zeroed. Returns ``(z_final, (values, step times))``, traces (starts, steps). Traced
    inside the caller's ``jit`` (the point and the sampled descents share it)."""
    opt = optax.adam(lr)

    def run(z0, rc, zr):
        def step(carry, t):
            z, state = carry
            (val, st), g = jax.value_and_grad(objective, has_aux=True)(z, rc, zr, t)
            g = jnp.where(jnp.isfinite(g), g, 0.0)
            upd, state = opt.update(g, state)
            z = jnp.clip(z + upd, lo, hi)
            return (z, state), (val, st)

        (z, _), trace = jax.lax.scan(step, (z0, opt.init(z0)), temps)
        return z, trace

    return jax.vmap(run)(z0, recompute, zero)


@brief_jit(static_argnames=("free", "structure", "fixed"))
def _descend(z0, recompute, zero, lo, hi, temps, lr, model, system, global_batch, fp8, flash,
             power_budget_w, free: tuple[str, ...], structure: Structure, fixed=()):
    """Adam on the relaxed objective for every start at once (:func:`adam_scan`).

    The model is traced (one compilation per :class:`Structure` and free-field tuple, shared
    by every model of that structure); the formulas read ``structure``, so blocks the model
    lacks are not built (a smaller graph to differentiate)."""
    def objective(z, rc, zr, t):
        return relaxed.objective(z, rc, zr, t, model, system, global_batch, fp8, flash,
                                 power_budget_w, free, structure, fixed)

    return adam_scan(objective, z0, recompute, zero, lo, hi, temps, lr)


def starting_points(space: SearchSpace, starts: int, seed: int, t_start: float = 0.3,
                    t_end: float = 0.005, steps: int = 150) -> dict:
    """The descent's inputs shared by every objective: ``starts`` uniform points in the box
    of :func:`relaxed.bounds`, each start's (recompute, ZeRO) pair from :data:`COMBOS`, the
    geometric temperature schedule and the power budget (inf for none)."""
    lo, hi = relaxed.bounds(space)
    rng = np.random.default_rng(seed)
    z0 = lo + (hi - lo) * rng.random((starts, len(lo)))
    combos = np.asarray([COMBOS[i % len(COMBOS)] for i in range(starts)], dtype=float)
    return {"z0": z0, "combos": combos, "lo": lo, "hi": hi,
            "temps": jnp.geomspace(t_start, t_end, steps),
            "budget": np.inf if space.power_budget_w is None else space.power_budget_w}


def descend(space: SearchSpace, starts: int, steps: int, seed: int, lr: float = 0.1,
            t_start: float = 0.3, t_end: float = 0.005):
    """Run the multi-start descent; returns ``(z_final, (recompute, zero) per start,
    objective traces, relaxed step-time traces)``."""
    x = starting_points(space, starts, seed, t_start, t_end, steps)
    z, (vals, st) = _descend(
        jnp.asarray(x["z0"]), jnp.asarray(x["combos"][:, 0]), jnp.asarray(x["combos"][:, 1]),
        jnp.asarray(x["lo"]), jnp.asarray(x["hi"]), x["temps"], lr,
        space.model.model, space.system.system, float(space.global_batch), float(space.fp8),
        float(space.flash), x["budget"], space.free, S.structure(space), space.fixed)
    return np.asarray(z), x["combos"], np.asarray(vals), np.asarray(st)


def _bracket(values: np.ndarray, x: float) -> list[int]:
    """The entries of sorted ``values`` just below and just above ``x``."""
    below = values[values <= x * (1 + 1e-9)]
    above = values[values >= x * (1 - 1e-9)]
    out = ([int(below[-1])] if below.size else []) + ([int(above[0])] if above.size else [])
    return sorted(set(out))


def round_points(space: SearchSpace, z: np.ndarray) -> dict[str, np.ndarray]:
    """All lattice rows bracketing each point of ``z`` (every recompute/ZeRO pair)."""
    gpus = int(space.system.values["cluster"]["gpus"])
    pp_values = lattice.divisors(gpus).astype(float)
    n = len(relaxed.DEGREES)
    rows = []
    for zi in z:
        axes = []
        for i, name in enumerate(relaxed.DEGREES):
            x = 2.0 ** zi[i]
            if name in POW2:
                axes.append(sorted({2 ** int(np.floor(zi[i] + 1e-9)), 2 ** int(np.ceil(zi[i] - 1e-9))}))
            elif name == "pp":
                axes.append(_bracket(pp_values, x))
            else:  # vpp
                axes.append(sorted({int(np.floor(x + 1e-9)), int(np.ceil(x - 1e-9))}))
        for j, key in enumerate(space.free):
            v = float(np.exp(zi[n + j]))
            axes.append(sorted({np.floor(v), np.ceil(v)}) if key in INTEGER_FIELDS else [v])
        for combo in itertools.product(*axes):
            for rc, zero in COMBOS:
                for opts in _option_combos(space):
                    rows.append(combo[:n] + (rc, zero) + opts + combo[n:])
    return _columns(space, np.asarray(rows, dtype=float))


def _option_combos(space: SearchSpace) -> list[tuple[int, ...]]:
    """Every combination of the option columns the space enumerates (order of
    ``space.options``)."""
    return list(itertools.product(*space.options.values()))


def _columns(space: SearchSpace, rows: np.ndarray, unique: bool = True
             ) -> dict[str, np.ndarray]:
    """Rows ``(degrees..., recompute, zero, options..., hw...)`` -> valid lattice columns
    (deduplicated when ``unique``; rows known to be distinct skip the sort). An option code
    that does not apply to its row's degrees is set to its default
    (:func:`cpo_opt.search.lattice.without_inapplicable_options`), so a neighbour the polish
    builds by changing degrees is that plan with the option off, not dropped."""
    names = _names(space)
    if rows.size == 0:
        rows = np.zeros((0, len(names) + len(space.free)))
    if space.options and len(rows):  # options that do not apply: off, not the row dropped
        cols = {k: rows[:, i].astype(np.int64) for i, k in enumerate(names)}
        cols["global_batch"] = np.full(len(rows), space.global_batch, dtype=np.int64)
        cols = lattice.without_inapplicable_options(cols, space.model.values,
                                                    space.system.values, space.fp8)
        rows = rows.copy()
        for i, k in enumerate(names):
            if k in space.options:
                rows[:, i] = cols[k]
        unique = True  # two rows may now be the same plan
    if unique:
        rows = np.unique(rows, axis=0)
    cols = {k: rows[:, i].astype(np.int64) for i, k in enumerate(names)}
    for j, key in enumerate(space.free):
        cols["hw:" + key] = rows[:, len(names) + j]
    cols["global_batch"] = np.full(len(rows), space.global_batch, dtype=np.int64)
    ok = lattice.in_space(cols, space.model.values, space.system.values, space.fp8)
    cols = {k: v[ok] for k, v in cols.items()}
    cols["dp"] = lattice._dp_work(cols, space.system.values)[0] if len(cols["tp"]) else \
        np.zeros(0, dtype=np.int64)
    return cols


def _names(space: SearchSpace) -> tuple[str, ...]:
    """Row layout: degrees, recompute, zero, the enumerated options (then hardware)."""
    return relaxed.DEGREES + ("recompute", "zero") + tuple(space.options)


def _steps(space: SearchSpace, name: str, v: int) -> tuple[int, ...]:
    """The lattice values one step below and above ``v`` along degree ``name``; for ``pp``
    and ``vpp`` also halving and doubling, so ``pp / 2, vpp * 2`` keeps the layers a chunk."""
    if name in POW2:
        return tuple(x for x in (v // 2, v * 2) if x >= 1)
    if name == "pp":
        gpus = int(space.system.values["cluster"]["gpus"])
        pp_values = lattice.divisors(gpus)
        j = int(np.searchsorted(pp_values, v))
        near = {int(pp_values[k]) for k in (j - 1, j + 1) if 0 <= k < len(pp_values)}
        near |= {x for x in (v // 2, v * 2) if x >= 1 and gpus % x == 0}
        return tuple(sorted(near - {v}))
    return tuple(sorted({x for x in (v - 1, v + 1, v // 2, v * 2) if 1 <= x != v}))


def _axis(space: SearchSpace, name: str) -> tuple[int, ...]:
    """Every lattice value of degree ``name`` within the relaxed box (powers of two up to
    the bound, the cluster's divisors up to the layer count for ``pp``, 1..MAX_VPP)."""
    lo, hi = relaxed.bounds(space)
    top = 2.0 ** hi[relaxed.DEGREES.index(name)]
    if name == "pp":
        gpus = int(space.system.values["cluster"]["gpus"])
        return tuple(int(v) for v in lattice.divisors(gpus) if v <= top)
    if name in POW2:
        return tuple(2 ** k for k in range(int(np.floor(np.log2(top) + 1e-9)) + 1))
    return tuple(range(1, int(top + 1e-9) + 1))


def _neighbours(space: SearchSpace, cols: dict, i: int, full: bool = True
                ) -> dict[str, np.ndarray]:
    """Lattice rows that differ from row ``i`` in one or two degrees, each with every
    recompute/ZeRO pair. ``full``: the changed degrees take every value of their axis (a
    two-dimensional line search: coupled moves such as ``pp / 9, vpp / 8`` are one move);
    otherwise one step along each (``_steps``)."""
    axes_names = relaxed.DEGREES + tuple(space.options)
    base = np.asarray([int(cols[k][i]) for k in axes_names], dtype=float)
    hw = np.asarray([float(cols["hw:" + k][i]) for k in space.free], dtype=float)
    n_deg = len(relaxed.DEGREES)
    if full:
        moves = {d: tuple(v for v in _axis(space, name) if v != base[d])
                 for d, name in enumerate(relaxed.DEGREES)}
    else:
        moves = {d: _steps(space, name, int(base[d])) for d, name in enumerate(relaxed.DEGREES)}
    for j, name in enumerate(space.options):  # options: one more axis each
        moves[n_deg + j] = tuple(v for v in space.options[name] if v != base[n_deg + j])
    parts = [base[None, :]]
    for d, vals in moves.items():
        alt = np.repeat(base[None, :], len(vals), 0)
        alt[:, d] = vals
        parts.append(alt)
    # tensor and context parallelism split the same model-parallel group: exchanging them
    # (tp, cp) -> (cp, tp) keeps dp and the micro-batches, so it is one move (with any one
    # other: the study's config3/copper descent ends at (tp 1, cp 4, pp 2, vpp 8), the
    # optimum is (tp 4, cp 1, pp 1, vpp 1): the exchange plus the pipeline's collapse)
    it, ic = relaxed.DEGREES.index("tp"), relaxed.DEGREES.index("cp")
    if base[it] != base[ic]:
        singles = np.concatenate(parts)
        swapped = singles.copy()
        swapped[:, it], swapped[:, ic] = singles[:, ic], singles[:, it]
        parts.append(swapped)
    for d1, d2 in itertools.combinations(moves, 2):
        v1, v2 = np.meshgrid(np.asarray(moves[d1], float), np.asarray(moves[d2], float))
        alt = np.repeat(base[None, :], v1.size, 0)
        alt[:, d1], alt[:, d2] = v1.ravel(), v2.ravel()
        parts.append(alt)
    alts = np.concatenate(parts)
    # a move to pp = 1 leaves no pipeline to interleave: vpp follows to 1 (Megatron refuses
    # vpp > 1 without a pipeline, plan_rules), so collapsing the pipeline is one move, not
    # two, as an option that stops applying is switched off
    ip, iv = relaxed.DEGREES.index("pp"), relaxed.DEGREES.index("vpp")
    alts[alts[:, ip] == 1, iv] = 1
    alts = np.unique(alts, axis=0)
    combos = np.asarray(COMBOS, dtype=float)
    deg, opt = alts[:, :n_deg], alts[:, n_deg:]
    reps = len(combos)
    rows = np.concatenate([np.repeat(deg, reps, 0), np.tile(combos, (len(alts), 1)),
                           np.repeat(opt, reps, 0),
                           np.broadcast_to(hw, (len(alts) * reps, len(hw)))], axis=1)
    return _columns(space, rows, unique=False)  # distinct by construction


def _key(cols: dict, i: int) -> tuple:
    """A row's identity: its plan (degrees, options, recompute, zero) and (for co-design)
    its hardware point."""
    names = relaxed.DEGREES + tuple(k for k in lattice.OPTION_COLUMNS if k in cols)
    plan = tuple(int(cols[k][i]) for k in names + ("recompute", "zero"))
    return plan + tuple(float(cols[k][i]) for k in cols if k.startswith("hw:"))


HW_STEPS = tuple(sorted(s * k / 64 for k in (1, 4, 16, 64) for s in (1, -1)))
"""log2 of the multiplicative hardware moves of the polish, ``x 2 ** (+-1/64 ... +-1)``:
coarse steps to travel, 1% steps to settle on a limit such as the power budget."""


def _hardware_moves(space: SearchSpace, cols: dict, i: int) -> dict[str, np.ndarray]:
    """Row ``i``'s plan at nearby hardware points: each free field (and each pair of them)
    scaled by :data:`HW_STEPS` and at 17 log-spaced values across its bounds, clipped to the
    bounds (integer fields rounded). The exact scorer masks points beyond a fabric limit or
    the power budget, so repeated rounds walk the hardware onto the binding limit."""
    hw = np.asarray([float(cols["hw:" + k][i]) for k in space.free])
    axes = []
    for j, (key, (lo, hi)) in enumerate(zip(space.free, space.bounds)):
        v = np.concatenate([hw[j] * 2.0 ** np.asarray(HW_STEPS), np.geomspace(lo, hi, 17)])
        v = np.clip(v, lo, hi)
        if key in INTEGER_FIELDS:
            v = np.round(v)
        axes.append(np.unique(v[v != hw[j]]))
    points = []
    for j, v in enumerate(axes):
        p = np.repeat(hw[None, :], len(v), 0)
        p[:, j] = v
        points.append(p)
    for j1, j2 in itertools.combinations(range(len(axes)), 2):
        a, b = np.meshgrid(axes[j1], axes[j2])
        p = np.repeat(hw[None, :], a.size, 0)
        p[:, j1], p[:, j2] = a.ravel(), b.ravel()
        points.append(p)
    points = np.concatenate(points)
    plan = [float(cols[k][i]) for k in _names(space)]
    rows = np.concatenate([np.repeat(np.asarray(plan)[None, :], len(points), 0), points], axis=1)
    return _columns(space, rows, unique=False)


def _beam(cols: dict, scores: dict, width: int) -> list[int]:
    """Rows of the ``width`` fastest feasible distinct plans (ignoring recompute/ZeRO)."""
    order = np.argsort(scores["step_time_s"], kind="stable")
    seen, out = set(), []
    n_opt = sum(1 for k in lattice.OPTION_COLUMNS if k in cols)
    for i in order:
        if not np.isfinite(scores["step_time_s"][i]):
            break
        k = _key(cols, int(i))[: len(relaxed.DEGREES) + n_opt]
        if k not in seen:
            seen.add(k)
            out.append(int(i))
        if len(out) == width:
            break
    return out


def gradient_search(space: SearchSpace, starts: int = 32, steps: int = 150, seed: int = 0,
                    lr: float = 0.1, polish_rounds: int = 40, beam: int = 8,
                    top: int = 5, full: bool = True, scorer=None,
                    descend_fn=None) -> SearchResult:
    """Multi-start relaxed descent, rounding and exact re-scoring (see module docstring).

    ``scorer`` (default :func:`cpo_opt.search.score.make_exact_scorer`) and ``descend_fn``
    (default :func:`descend`) replace the exact scorer and the descent, e.g. by the sampled
    objectives of :mod:`cpo_opt.search.robust`."""
    t0 = time.perf_counter()
    z, combos, vals, st = (descend_fn or descend)(space, starts, steps, seed, lr)
    t_descent = time.perf_counter() - t0
    cols = round_points(space, z)
    scorer = scorer or S.make_exact_scorer(space)
    scores = S.score(space, cols, scorer, batch=SMALL_BATCH)
    exact = len(cols["tp"])
    visited: set[tuple] = set()
    rounds = 0
    hw_visited: set[tuple] = set()
    while rounds < polish_rounds:
        # plan moves until the beam is settled, then (co-design) hardware moves of the beam
        frontier = [i for i in _beam(cols, scores, beam) if _key(cols, i) not in visited]
        if frontier:
            parts = [_neighbours(space, cols, i, full) for i in frontier]
            visited.update(_key(cols, i) for i in frontier)
        elif space.free:
            frontier = [i for i in _beam(cols, scores, beam) if _key(cols, i) not in hw_visited]
            parts = [_hardware_moves(space, cols, i) for i in frontier]
            hw_visited.update(_key(cols, i) for i in frontier)
        if not frontier:
            break
        rounds += 1
        nb = {k: np.concatenate([p[k] for p in parts]) for k in cols}
        nb_scores = S.score(space, nb, scorer, batch=SMALL_BATCH)
        exact += len(nb["tp"])
        cols = {k: np.concatenate([cols[k], nb[k]]) for k in cols}
        scores = {k: np.concatenate([scores[k], nb_scores[k]]) for k in scores}
    best, best_k = S.best_row(cols, scores, top)
    wall = time.perf_counter() - t0
    relaxed_evals = int(starts * steps)
    detail = {
        "relaxed_evaluations": relaxed_evals,
        "exact_evaluations": int(exact),
        "starts": int(starts), "steps": int(steps), "polish_rounds": rounds, "beam": beam,
        "descent_wall_s": t_descent,
        "relaxed_final_step_time_s": [float(v[-1]) for v in st],
        "relaxed_final_objective": [float(v[-1]) for v in vals],
        "top": S.describe(space, cols, scores, best_k) if best is not None else [],
    }
    if best is None:
        return SearchResult({}, {}, float("inf"), relaxed_evals + exact, wall,
                            "gradient+rounding", detail)
    plan, hw = S.row_result(space, cols, best, scores)
    return SearchResult(plan, hw, float(scores["step_time_s"][best]), relaxed_evals + exact,
                        wall, "gradient+rounding", detail)

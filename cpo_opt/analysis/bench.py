"""Steady-state rate of the exact model on many distinct valid plans (``cpo-opt bench``).

Plans are drawn from the discrete plan space (:mod:`cpo_opt.search.lattice`) of the model on the
system; when the space has fewer plans than requested, copies with larger (still valid)
global batches make every evaluated plan distinct. The timed function is
``jit(vmap(step_time))`` returning the full :class:`~cpo_opt.model.step.StepTime` (every field,
the same function ``evaluate`` runs), with the model as traced (unbatched) data and its
:class:`~cpo_opt.model.structure.Structure` static, as the searches' scorer runs it, and the
system fixed (a compile-time constant: the rate of the model itself; the scorer also traces
the system, docs/speed.md); batches are on the device before timing starts and every result
is blocked on. Compilation is timed separately.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from cpo_opt.search import lattice
from cpo_opt.inputs import ArgumentError, schema
from cpo_opt.inputs.loaders import ModelSpec, SystemSpec
from cpo_opt.inputs.stacks import load_stack
from cpo_opt.search.batching import batch_sharding, default_batch
from cpo_opt.search.space import search_options
from cpo_opt.model.step import step_time
from cpo_opt.model.structure import Structure, structure_of


def evaluator(system, structure: Structure, fixed: tuple = ()):
    """``jit((model, rows) -> StepTime of every row)`` for lattice columns ``rows`` (``vmap``;
    the model unbatched data of ``structure``, the system a constant, fp8/flash the
    structure's, the software options ``fixed`` (a stack's, :func:`search_options`))."""
    fp8, flash = structure.plan_switches()
    opts = dict(fixed)
    return jax.jit(lambda model, rows: jax.vmap(lambda row: step_time(
        model, system, lattice.to_plan(row, fp8, flash, fixed=opts),
        structure=structure, every_field=True))(rows))


def default_global_batch(model: ModelSpec, system: SystemSpec) -> int:
    """:func:`schema.default_global_batch` with ``unit = gpus * MAX_MICRO_BATCH``, so that every
    power-of-two ``micro_batch * dp`` of the lattice divides it."""
    gpus = int(system.values["cluster"]["gpus"])
    return schema.default_global_batch(gpus, int(model.values["model"]["seq_len"]),
                                       gpus * lattice.MAX_MICRO_BATCH)


def sample_plans(model: ModelSpec, system: SystemSpec, n: int, seed: int = 0,
                 global_batch: int | None = None) -> dict[str, np.ndarray]:
    """``n`` distinct valid plans as lattice columns (all at once: for small ``n``; the
    bench draws them batch by batch, :func:`plan_batches`)."""
    parts = list(plan_batches(model, system, n, max(n, 1), seed, global_batch))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def plan_batches(model: ModelSpec, system: SystemSpec, n: int, batch: int, seed: int = 0,
                 global_batch: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The same ``n`` plans as :func:`sample_plans`, ``batch`` rows at a time: only the
    lattice (bounded by ``lattice.MAX_PLAN_ROWS``) and one batch are ever on the host, so
    ``n`` is bounded by time, not memory.

    Row ``j`` is row ``perm_r[j mod L]`` of the lattice (``L`` plans) with its global batch
    times ``r + 1``, ``r = j // L``, where ``perm_r`` is the ``r``-th permutation the seeded
    generator draws: every row a distinct valid plan."""
    gb = global_batch or default_global_batch(model, system)
    cols = lattice.enumerate_plans(model.values, system.values, gb)
    size = len(cols["tp"])
    rng = np.random.default_rng(seed)
    perm, rep = None, -1
    for start in range(0, n, batch):
        j = np.arange(start, min(start + batch, n), dtype=np.int64)
        idx = np.empty(len(j), dtype=np.int64)
        reps = j // size
        for r in np.unique(reps):
            while rep < r:
                perm, rep = rng.permutation(size), rep + 1
            sel = reps == r
            idx[sel] = perm[j[sel] % size]
        out = {k: v[idx] for k, v in cols.items()}
        out["global_batch"] = out["global_batch"] * (1 + reps)
        yield out


def cost_per_plan(f, rows, batch: int, **static) -> dict[str, float]:
    """XLA's own count of the compiled evaluation, per plan: ``flops`` (arithmetic),
    ``transcendentals`` (exp/log/pow), ``bytes`` (bytes accessed: the plan columns read, the
    StepTime fields written, and any intermediate XLA did not fuse). Empty when the backend
    gives no cost analysis. ``rate * flops`` against the peak, and ``rate * bytes`` against
    memory bandwidth, say which bound the rate is nearer (docs/speed.md). ``rows``: the
    argument, or a tuple of the arguments, of the jitted ``f``; ``static``: its static
    keyword arguments."""
    try:
        args = rows if isinstance(rows, tuple) else (rows,)
        ca = f.lower(*args, **static).compile().cost_analysis()
    except Exception:  # not every backend/version implements it
        return {}
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    if not ca:
        return {}
    get = lambda k: float(ca.get(k, 0.0)) / batch  # noqa: E731
    return {"flops": get("flops"), "transcendentals": get("transcendentals"),
            "bytes": get("bytes accessed")}


MAX_N = 10**10
"""Most plans one bench evaluates (``--n``): drawn batch by batch, so the bound is on time
(see ``max_seconds``), not memory."""


def bench(model: ModelSpec, system: SystemSpec, n: int = 4_000_000, batch: int | None = None,
          dtype: str = "float32", seed: int = 0,
          max_seconds: float | None = None, stack=None) -> dict[str, Any]:
    """Evaluate ``n`` distinct plans in vmapped batches; returns the ``bench --json`` object.

    ``batch`` defaults to :func:`cpo_opt.search.batching.default_batch` (16k rows on CPU).
    Plans are drawn batch by batch (:func:`plan_batches`); each batch is put on the device
    and blocked on before its evaluation is timed, so ``wall_s`` sums the evaluations alone,
    as when every batch was placed beforehand. ``max_seconds`` stops the run once that much
    evaluation time is spent: ``n`` is then the plans evaluated, ``stopped_early`` is true
    and ``warnings`` says so. The plans run the software ``stack``'s options (default: the
    default stack; contiguous placement)."""
    fixed = tuple((k, v) for k, v in search_options(load_stack(stack))[1] if k != "schedule")
    batch = batch or default_batch()
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("bench: dtype='float64' needs float64 enabled by the caller "
                         "(cpo_opt.runtime.setup(x64=True)); library code never sets it")
    if not 1 <= n <= MAX_N:
        raise ArgumentError("n", f"must be between 1 and {MAX_N} (got {n})")
    requested = n
    dt = jnp.float64 if dtype == "float64" else jnp.float32
    fp8, flash = 0, schema.resolve_attention(-1, system.values["gpu"]["matmul_tflops_bf16"],
                                             "matmul_tflops_fp8" in system.values["gpu"])
    m, s = model.model, system.system
    st = structure_of(m, fp8, flash)

    g = evaluator(s, st, fixed)

    def f(rows):
        return g(m, rows)
    npdt = np.float32 if dt == jnp.float32 else np.float64
    names = lattice.COLUMNS + ("global_batch",)
    ndev = jax.device_count()
    batch = min(batch, n)
    batch = max(ndev, batch // ndev * ndev)
    n = max(n // batch, 1) * batch
    sharding = batch_sharding()

    def placed(cols):
        return jax.block_until_ready({k: jax.device_put(cols[k].astype(npdt), sharding)
                                      for k in names})
    draws = plan_batches(model, system, n, batch, seed)
    first = next(draws)
    gb0 = int(first["global_batch"][0])
    p = placed(first)
    t0 = time.perf_counter()
    jax.block_until_ready(f(p))
    compile_s = time.perf_counter() - t0
    cost = cost_per_plan(g, (m, p), batch)
    wall, done, checksum, stopped = 0.0, 0, 0.0, False
    while p is not None:
        t0 = time.perf_counter()
        r = jax.block_until_ready(f(p))
        wall += time.perf_counter() - t0
        checksum += float(jnp.sum(r.fits_memory))
        done += batch
        if max_seconds is not None and wall >= max_seconds and done < n:
            stopped = True
            break
        nxt = next(draws, None)
        p = None if nxt is None else placed(nxt)
    out = {
        "evaluations_per_s": done / wall,
        "n": done,
        "n_requested": requested,
        "stopped_early": stopped,
        "compile_s": compile_s,
        "device": jax.devices()[0].platform,
        "devices": jax.device_count(),
        "batch": batch,
        "dtype": dtype,
        "wall_s": wall,
        "lattice_size": int(len(lattice.enumerate_plans(
            model.values, system.values, gb0)["tp"])),
        "fraction_fitting_memory": checksum / done,
        "cost_per_plan": cost,
        "model": model.name,
        "system": system.name,
        "warnings": [],
    }
    if stopped:
        out["warnings"].append(f"stopped after {wall:.3g} s of evaluation (max_seconds = "
                               f"{max_seconds:g}): {done} of the {requested} plans asked for")
    return out


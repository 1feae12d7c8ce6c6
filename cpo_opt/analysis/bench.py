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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cpo_opt.search import lattice
from cpo_opt.inputs import schema
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
        structure=structure))(rows))


def default_global_batch(model: ModelSpec, system: SystemSpec) -> int:
    """:func:`schema.default_global_batch` with ``unit = gpus * MAX_MICRO_BATCH``, so that every
    power-of-two ``micro_batch * dp`` of the lattice divides it."""
    gpus = int(system.values["cluster"]["gpus"])
    return schema.default_global_batch(gpus, int(model.values["model"]["seq_len"]),
                                       gpus * lattice.MAX_MICRO_BATCH)


def sample_plans(model: ModelSpec, system: SystemSpec, n: int, seed: int = 0,
                 global_batch: int | None = None) -> dict[str, np.ndarray]:
    """``n`` distinct valid plans as lattice columns."""
    gb = global_batch or default_global_batch(model, system)
    cols = lattice.enumerate_plans(model.values, system.values, gb)
    size = len(cols["tp"])
    rng = np.random.default_rng(seed)
    reps = -(-n // size)
    idx = np.concatenate([rng.permutation(size) for _ in range(reps)])[:n]
    out = {k: v[idx] for k, v in cols.items()}
    out["global_batch"] = out["global_batch"] * (1 + np.arange(n) // size)
    return out


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


def bench(model: ModelSpec, system: SystemSpec, n: int = 4_000_000, batch: int | None = None,
          dtype: str = "float32", seed: int = 0, stack=None) -> dict[str, Any]:
    """Evaluate ``n`` distinct plans in vmapped batches; returns the ``bench --json`` object.

    ``batch`` defaults to :func:`cpo_opt.search.batching.default_batch` (16k rows on CPU);
    the plans run the software ``stack``'s options (default: the default stack; contiguous
    placement)."""
    fixed = tuple((k, v) for k, v in search_options(load_stack(stack))[1] if k != "schedule")
    batch = batch or default_batch()
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("bench: dtype='float64' needs float64 enabled by the caller "
                         "(cpo_opt.runtime.setup(x64=True)); library code never sets it")
    dt = jnp.float64 if dtype == "float64" else jnp.float32
    batch = min(batch, n)
    n = (n // batch) * batch
    cols = sample_plans(model, system, n, seed)
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
    batch = max(ndev, batch // ndev * ndev)
    n = (n // batch) * batch
    sharding = batch_sharding()
    batches = []
    for i in range(0, n, batch):
        batches.append({k: jax.device_put(cols[k][i:i + batch].astype(npdt), sharding)
                        for k in names})
    t0 = time.perf_counter()
    jax.block_until_ready(f(batches[0]))
    compile_s = time.perf_counter() - t0
    cost = cost_per_plan(g, (m, batches[0]), batch)
    t0 = time.perf_counter()
    checksum = 0.0
    for p in batches:
        r = jax.block_until_ready(f(p))
        checksum += float(jnp.sum(r.fits_memory))
    wall = time.perf_counter() - t0
    return {
        "evaluations_per_s": n / wall,
        "n": n,
        "compile_s": compile_s,
        "device": jax.devices()[0].platform,
        "devices": jax.device_count(),
        "batch": batch,
        "dtype": dtype,
        "wall_s": wall,
        "lattice_size": int(len(lattice.enumerate_plans(
            model.values, system.values, int(cols["global_batch"][0]))["tp"])),
        "fraction_fitting_memory": checksum / n,
        "cost_per_plan": cost,
        "model": model.name,
        "system": system.name,
    }

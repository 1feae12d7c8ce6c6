"""Evaluate a function over millions of rows in fixed-size batches, sharded over local devices.

Rows are numpy columns on the host. Every call of the jitted function sees one of two batch
shapes, :data:`SMALL_BATCH` (the gradient search's rounding and polish, a few thousand to a
few hundred thousand rows) or :data:`LARGE_BATCH` (exhaustive search, sweeps, bench): the last
batch is padded to the full shape, so a search compiles its scorer once, whatever the row
counts. A batch is laid out along a 1-D mesh of this process's devices with
``jax.sharding.NamedSharding``, so ``jit`` runs the vmapped model SPMD over every local device
(test on CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``). Work is split
between ``jax.distributed`` processes one level up (:mod:`cpo_opt.search.distributed`): each
process maps its own share of the rows here. Progress goes to stderr.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SMALL_BATCH = 1 << 14
"""Rows per call for small, repeated scoring calls (gradient search)."""
LARGE_BATCH = 1 << 14
"""Rows per call for large scans (exhaustive search, bench). On CPU the same as
:data:`SMALL_BATCH`, so every search compiles one shape: XLA materializes some intermediates
of the evaluation (about 2.7 kB per plan, ``cpo-opt bench``'s ``cost_per_plan``), and at
16k rows they stay in cache; at 256k rows they go to DRAM and the rate fell 2-3x (measured,
docs/speed.md). On accelerators see :func:`default_batch`."""
ACCELERATOR_BATCH = 1 << 18
"""Rows per call per GPU/TPU device (enough threads to fill one)."""
DEFAULT_BATCH = LARGE_BATCH


def default_batch() -> int:
    """Rows per call for large scans on this backend: :data:`LARGE_BATCH` on CPU,
    :data:`ACCELERATOR_BATCH` per device elsewhere."""
    if jax.default_backend() == "cpu":
        return LARGE_BATCH
    return ACCELERATOR_BATCH * jax.local_device_count()


def batch_sharding() -> NamedSharding:
    """Sharding of a batch axis over this process's devices."""
    return NamedSharding(Mesh(np.asarray(jax.local_devices()), ("batch",)), PartitionSpec("batch"))


def replicated_sharding() -> NamedSharding:
    """Every local device holds the whole array (tables the batch gathers from)."""
    return NamedSharding(Mesh(np.asarray(jax.local_devices()), ("batch",)), PartitionSpec())


def batch_shape(batch: int) -> int:
    """``batch`` rounded up to a multiple of the local device count."""
    ndev = jax.local_device_count()
    return -(-max(int(batch), 1) // ndev) * ndev


def _to_device(a: np.ndarray, sharding: NamedSharding):
    if jax.local_device_count() == 1:
        return jax.device_put(a)
    return jax.device_put(a, sharding)


def batched_map(fn: Callable[[dict], Any], columns: dict[str, np.ndarray],
                batch: int = DEFAULT_BATCH, progress: bool = False, desc: str = "evaluating"
                ) -> Any:
    """``fn`` (jitted, vmapped over rows) applied to every row of ``columns``.

    Every call gets exactly :func:`batch_shape` ``(batch)`` rows (the last batch padded with
    copies of its last row), so ``fn`` compiles once. Returns ``fn``'s output pytree with
    leaves concatenated along rows (numpy), without the padding rows.
    """
    n = len(next(iter(columns.values())))
    batch = batch_shape(batch)
    sharding = batch_sharding()
    outs = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n, desc=desc, unit="plan", unit_scale=True, leave=False)
    pending = None
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        part = {}
        for k, v in columns.items():
            chunk = v[start:stop]
            if stop - start < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - (stop - start), 0)])
            part[k] = _to_device(np.ascontiguousarray(chunk), sharding)
        out = fn(part)  # dispatched asynchronously: the host prepares the next batch meanwhile
        if pending is not None:
            outs.append(jax.tree.map(lambda x, m=pending[1]: np.asarray(x)[:m], pending[0]))
        pending = (out, stop - start)
        if bar is not None:
            bar.update(stop - start)
    if pending is not None:
        outs.append(jax.tree.map(lambda x, m=pending[1]: np.asarray(x)[:m], pending[0]))
    if bar is not None:
        bar.close()
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)

"""Searches and sweeps split over ``jax.distributed`` processes (one per host or per slot).

Model: every process runs the same program on the same inputs. Where the work is a list of
rows (the exhaustive search, the exact re-scoring of the gradient search, the study's checks),
process ``i`` of ``N`` takes the contiguous share :func:`share` of the rows, scores it on its
local devices (:mod:`cpo_opt.search.batching`), and the processes exchange only what the
answer needs: the exhaustive search gathers each process's best rows and counts
(:func:`gather_best`), other callers the scores of every share (:func:`gather_shares`). Every
process then holds the same result; the command line prints it from process 0 only, with
``processes: N``. Evaluations count every process's rows.

Start-up (:func:`initialize`): explicit ``coordinator`` (``HOST:PORT``), ``num_processes`` and
``process_id`` (the ``--coordinator --num-processes --process-id`` flags), else the
environment variables ``CPO_OPT_COORDINATOR``, ``CPO_OPT_NUM_PROCESSES``,
``CPO_OPT_PROCESS_ID``, else a cluster JAX detects by itself (SLURM with more than one task,
Open MPI, ...: ``jax.distributed.initialize()`` without arguments). Without any of these the
run is one process and nothing here does anything.

On CPU the exchanges are XLA collectives over gloo (``jax_cpu_collectives_implementation``);
on GPU, NCCL. See docs/speed.md for a multi-host SLURM launch.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import numpy as np

_STARTED = False


def _cluster_detected() -> bool:
    """Whether the environment is a multi-task job that JAX can configure itself."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ:
        return True
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return True
    return False


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> int:
    """Start ``jax.distributed`` if asked (arguments, environment or detected cluster);
    returns the number of processes (1 when not distributed). Idempotent.

    Raises ``ValueError`` naming the argument when the three values are incomplete or out of
    range (callers turn it into an ``ArgumentError``).
    """
    global _STARTED
    import jax

    if _STARTED:
        return jax.process_count()
    coordinator = coordinator or os.environ.get("CPO_OPT_COORDINATOR") or None
    if num_processes is None and os.environ.get("CPO_OPT_NUM_PROCESSES"):
        num_processes = int(os.environ["CPO_OPT_NUM_PROCESSES"])
    if process_id is None and os.environ.get("CPO_OPT_PROCESS_ID"):
        process_id = int(os.environ["CPO_OPT_PROCESS_ID"])
    if coordinator is None and num_processes is None and process_id is None:
        if not _cluster_detected():
            return 1
        _cpu_collectives(jax)
        with _stdout_to_stderr():
            jax.distributed.initialize()
        _STARTED = True
        return jax.process_count()
    if coordinator is None or num_processes is None or process_id is None:
        missing = [n for n, v in (("coordinator", coordinator), ("num_processes", num_processes),
                                  ("process_id", process_id)) if v is None]
        raise ValueError(f"{missing[0]}: needed with the other jax.distributed settings")
    if ":" not in coordinator:
        raise ValueError(f"coordinator: must be HOST:PORT (got {coordinator!r})")
    if num_processes < 1:
        raise ValueError(f"num_processes: must be >= 1 (got {num_processes})")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id: must be in 0..{num_processes - 1} (got {process_id})")
    if num_processes == 1:
        return 1
    _cpu_collectives(jax)
    with _stdout_to_stderr():
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=num_processes, process_id=process_id)
    _STARTED = True
    return jax.process_count()


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send file descriptor 1 to standard error meanwhile: gloo prints its connection
    messages on standard output, which ``--json`` keeps for exactly one JSON object."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _cpu_collectives(jax) -> None:
    """Cross-process collectives on the CPU backend go through gloo."""
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # older/newer JAX without the option: its default applies
        pass


def process_count() -> int:
    import jax
    return jax.process_count()


def process_index() -> int:
    import jax
    return jax.process_index()


def share(n: int, index: int | None = None, count: int | None = None) -> tuple[int, int]:
    """``[lo, hi)``: the contiguous rows of ``n`` that process ``index`` of ``count`` scores
    (sizes differ by at most one)."""
    index = process_index() if index is None else index
    count = process_count() if count is None else count
    return index * n // count, (index + 1) * n // count


def _allgather(x: np.ndarray) -> np.ndarray:
    """``(processes, *x.shape)``: ``x`` of every process (same shape everywhere)."""
    from jax.experimental import multihost_utils
    x = np.ascontiguousarray(x)
    if x.dtype.itemsize % 4:  # sent as 32-bit words: exact whatever jax_enable_x64 says
        x = x.astype(np.int64 if x.dtype.kind in "biu" else np.float64)
    words = x.reshape(-1).view(np.uint32)
    with _stdout_to_stderr():
        every = np.asarray(multihost_utils.process_allgather(words, tiled=False))
    return np.stack([np.ascontiguousarray(w).view(x.dtype).reshape(x.shape) for w in every])


def gather_shares(mine: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Concatenate every process's :func:`share` of ``n`` rows (a dict of 1-D arrays)."""
    count = process_count()
    width = -(-n // count)
    out = {}
    for k, v in mine.items():
        pad = np.zeros(width, dtype=v.dtype)
        pad[: len(v)] = v
        every = _allgather(pad)
        out[k] = np.concatenate([every[i][: share(n, i, count)[1] - share(n, i, count)[0]]
                                 for i in range(count)])
    return out


def gather_best(cols: dict[str, np.ndarray], scores: dict[str, np.ndarray], counts: np.ndarray,
                k: int) -> tuple[dict, dict, np.ndarray]:
    """Merge each process's best ``k`` rows (columns and scores, fewer when it has fewer) and
    sum its counters (``counts``, an integer vector); returns the concatenation of every
    process's rows (order: process 0 first) and the summed counters."""
    count = process_count()
    if count == 1:
        return cols, scores, np.asarray(counts)
    m = len(next(iter(cols.values())))
    sizes = _allgather(np.asarray([m], dtype=np.int64))[:, 0]
    total = _allgather(np.asarray(counts, dtype=np.int64)).sum(axis=0)

    def merged(d):
        out = {}
        for key, v in d.items():
            pad = np.zeros(k, dtype=np.float64)
            pad[:m] = v[:k]
            every = _allgather(pad)
            out[key] = np.concatenate([every[i][: sizes[i]] for i in range(count)]).astype(v.dtype)
        return out

    return merged(cols), merged(scores), total


def is_main() -> bool:
    """Whether this process prints (process 0, or the only one)."""
    return process_index() == 0


def summary() -> dict[str, Any]:
    """``{"processes": N}`` for reports."""
    return {"processes": process_count()}

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
run is one process and nothing here does anything. With explicit settings the processes
first meet on the coordinator's port (:func:`rendezvous`) and give up after
``--coordinator-timeout`` seconds (default :data:`DEFAULT_TIMEOUT_S`) with exit 2 naming
``--coordinator``: ``jax.distributed`` itself aborts the process (SIGABRT, a C++ stack trace)
when its coordinator does not answer. A detected cluster gets JAX's own start-up with the same
timeout.

On CPU the exchanges are XLA collectives over gloo (``jax_cpu_collectives_implementation``);
on GPU, NCCL. See docs/speed.md for a multi-host SLURM launch.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import time
from typing import Any

import numpy as np

from cpo_opt.inputs import ArgumentError, InputError

_STARTED = False

DEFAULT_TIMEOUT_S = 120
"""Seconds a process waits for the coordinator and the others (``--coordinator-timeout``,
``CPO_OPT_COORDINATOR_TIMEOUT``): long enough for every process of a job to import JAX on a
slow shared file system, short enough that a wrong address fails in minutes, not never."""

RENDEZVOUS = "cpo-opt rendezvous 1"
"""First line a process sends to process 0 before ``jax.distributed`` starts
(:func:`rendezvous`)."""


def _env_int(name: str, low: int, high: int) -> int | None:
    """An integer environment variable, checked; None when unset or empty. A bad value is an
    :class:`~cpo_opt.inputs.InputError` naming the variable."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return None
    t = text.strip()
    if not (t.lstrip("+-").isdigit() and t.isascii() and len(t) <= 30):
        raise InputError(f"environment variable {name}: must be an integer between {low} and "
                         f"{high} (got {_short(text)})")
    value = int(t)
    if not low <= value <= high:
        raise InputError(f"environment variable {name}: must be an integer between {low} and "
                         f"{high} (got {value})")
    return value


def _short(text: str) -> str:
    text = repr(text)
    return text if len(text) <= 60 else text[:50] + f"... ({len(text)} characters)"


MAX_PROCESSES = 2**20


def _cluster_detected() -> bool:
    """Whether the environment is a multi-task job that JAX can configure itself."""
    tasks = _env_int("SLURM_NTASKS", 0, MAX_PROCESSES)
    if (tasks or 1) > 1 and "SLURM_PROCID" in os.environ:
        return True
    if (_env_int("OMPI_COMM_WORLD_SIZE", 0, MAX_PROCESSES) or 1) > 1:
        return True
    return False


def parse_coordinator(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) -> (host, port); ArgumentError
    ``coordinator`` when it is not one."""
    t = str(text).strip()
    host, sep, port = t.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port:
        raise ArgumentError("coordinator", f"must be HOST:PORT, process 0's host and a free "
                            f"port (got {_short(text)})")
    if not (port.isdigit() and port.isascii() and 1 <= int(port) <= 65535):
        raise ArgumentError("coordinator", f"the port must be an integer between 1 and 65535 "
                            f"(got {_short(port)})")
    return host, int(port)


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout: float | None = None) -> int:
    """Start ``jax.distributed`` if asked (arguments, environment or detected cluster);
    returns the number of processes (1 when not distributed). Idempotent.

    With explicit settings every process first meets process 0 (:func:`rendezvous`), so that
    an unreachable coordinator or a missing process ends the run with
    :class:`~cpo_opt.inputs.ArgumentError` naming ``coordinator`` after ``timeout`` seconds
    (``jax.distributed`` itself would abort the process). Incomplete or out-of-range settings
    are ArgumentErrors naming the argument; a malformed environment variable is an
    InputError naming the variable.
    """
    global _STARTED
    import jax

    if _STARTED:
        return jax.process_count()
    if timeout is None:
        timeout = _env_int("CPO_OPT_COORDINATOR_TIMEOUT", 1, 3600) or DEFAULT_TIMEOUT_S
    if not (isinstance(timeout, (int, float)) and 0 < timeout <= 3600):
        raise ArgumentError("coordinator_timeout", f"must be between 1 and 3600 s (got "
                            f"{timeout!r})")
    from_env = set()
    if coordinator is None and os.environ.get("CPO_OPT_COORDINATOR", "").strip():
        coordinator = os.environ["CPO_OPT_COORDINATOR"]
        from_env.add("coordinator")
    if num_processes is None:
        num_processes = _env_int("CPO_OPT_NUM_PROCESSES", 1, MAX_PROCESSES)
        if num_processes is not None:
            from_env.add("num_processes")
    if process_id is None:
        process_id = _env_int("CPO_OPT_PROCESS_ID", 0, MAX_PROCESSES - 1)
        if process_id is not None:
            from_env.add("process_id")
    if coordinator is None and num_processes is None and process_id is None:
        if not _cluster_detected():
            return 1
        _cpu_collectives(jax)
        with _stdout_to_stderr():
            jax.distributed.initialize(initialization_timeout=int(math.ceil(timeout)))
        _STARTED = True
        return jax.process_count()

    def bad(name: str, rule: str) -> Exception:
        if name in from_env:
            return InputError(f"environment variable CPO_OPT_{name.upper()}: {rule}")
        return ArgumentError(name, rule)

    if coordinator is None or num_processes is None or process_id is None:
        missing = [n for n, v in (("coordinator", coordinator), ("num_processes", num_processes),
                                  ("process_id", process_id)) if v is None]
        raise ArgumentError(missing[0], "needed with the other jax.distributed settings "
                            "(--coordinator, --num-processes, --process-id)")
    if not 1 <= num_processes <= MAX_PROCESSES:
        raise bad("num_processes", f"must be between 1 and {MAX_PROCESSES} (got "
                  f"{num_processes if abs(num_processes) < 10**30 else 'a huge number'})")
    if not 0 <= process_id < num_processes:
        raise bad("process_id", f"must be in 0..{num_processes - 1} (got "
                  f"{process_id if abs(process_id) < 10**30 else 'a huge number'})")
    try:
        host, port = parse_coordinator(coordinator)
    except ArgumentError as e:
        raise bad("coordinator", e.rule) from None
    if num_processes == 1:
        return 1
    rendezvous(host, port, num_processes, process_id, timeout)
    _cpu_collectives(jax)
    with _stdout_to_stderr():
        jax.distributed.initialize(coordinator_address=f"{coordinator}".strip(),
                                   num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=int(math.ceil(timeout)))
    _STARTED = True
    return jax.process_count()


def _resolve_host(host: str, port: int) -> None:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ArgumentError("coordinator", f"{_short(host)}: unknown host ({reason})") from None


def rendezvous(host: str, port: int, n: int, index: int, timeout: float) -> None:
    """Meet every process of the job on the coordinator's port before ``jax.distributed``
    starts, or give up after ``timeout`` seconds with an ArgumentError naming
    ``coordinator``.

    Process 0 listens on the port (every interface, as ``jax.distributed``'s service does)
    and waits for the ``n - 1`` others; each other process connects (retrying until the
    deadline), sends ``RENDEZVOUS n index`` and waits for ``ok``, which process 0 sends once
    all have come. The others close first, so the port is free when process 0 closes it and
    ``jax.distributed`` binds it. A stranger on the port (a connection that does not say
    :data:`RENDEZVOUS`) is dropped; a process that disagrees on ``n`` or repeats an index is
    told why and gives up with that reason."""
    _resolve_host(host, port)
    deadline = time.monotonic() + timeout
    if index == 0:
        _host_rendezvous(port, n, deadline, timeout)
    else:
        _join_rendezvous(host, port, n, index, deadline, timeout)


def _listener(port: int) -> socket.socket:
    try:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", port), family=socket.AF_INET6, reuse_port=False,
                                        dualstack_ipv6=True, backlog=128)
        return socket.create_server(("", port), backlog=128)
    except OSError as exc:
        raise ArgumentError("coordinator", f"process 0 cannot listen on port {port}: "
                            f"{exc.strerror or exc} (the coordinator is process 0's own host "
                            "and a free port)") from None


def _host_rendezvous(port: int, n: int, deadline: float, timeout: float) -> None:
    joined: dict[int, socket.socket] = {}
    with _listener(port) as srv:
        try:
            while len(joined) < n - 1:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ArgumentError(
                        "coordinator", f"only {len(joined) + 1} of {n} processes joined "
                        f"within {timeout:g} s (--coordinator-timeout); start the others "
                        "with the same --coordinator and --num-processes")
                srv.settimeout(min(left, 1.0))
                try:
                    conn, _ = srv.accept()
                except (socket.timeout, InterruptedError):
                    continue
                conn.settimeout(max(min(deadline - time.monotonic(), 10.0), 0.1))
                words = _read_line(conn).split()
                ok = len(words) == 5 and " ".join(words[:3]) == RENDEZVOUS \
                    and words[3].isdigit() and words[4].isdigit()
                if not ok:  # not one of ours
                    conn.close()
                    continue
                their_n, their_i = int(words[3]), int(words[4])
                if their_n != n:
                    _reply(conn, f"no: process 0 was started with --num-processes {n}, this "
                                 f"process with {their_n}")
                elif their_i in joined or not 0 < their_i < n:
                    _reply(conn, f"no: --process-id {their_i} is taken or out of range "
                                 f"(1..{n - 1} besides process 0)")
                else:
                    joined[their_i] = conn
                    continue
                conn.close()
            for conn in joined.values():
                _reply(conn, "ok")
            for conn in joined.values():  # let the others close first (no TIME_WAIT here)
                conn.settimeout(5.0)
                try:
                    conn.recv(16)
                except OSError:
                    pass
        finally:
            for conn in joined.values():
                conn.close()


def _join_rendezvous(host: str, port: int, n: int, index: int, deadline: float,
                     timeout: float) -> None:
    hello = f"{RENDEZVOUS} {n} {index}\n".encode()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ArgumentError("coordinator", f"no coordinator answered at {host}:{port} "
                                f"within {timeout:g} s (--coordinator-timeout); start process "
                                "0 there, or check --coordinator")
        try:
            conn = socket.create_connection((host, port), timeout=min(left, 2.0))
        except OSError:
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
            continue
        with conn:
            try:
                conn.sendall(hello)
                conn.settimeout(max(deadline - time.monotonic(), 0.1))
                answer = _read_line(conn)
            except OSError:
                answer = ""
            if answer == "ok":
                return
            if answer.startswith("no: "):
                raise ArgumentError("coordinator", f"{host}:{port}: {answer[4:]}")
        if not answer:  # closed or silent: not (yet) our coordinator; try again
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))


def _read_line(conn: socket.socket, limit: int = 256) -> str:
    data = b""
    while b"\n" not in data and len(data) < limit:
        try:
            chunk = conn.recv(limit - len(data))
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[0].decode("ascii", "replace").strip()


def _reply(conn: socket.socket, text: str) -> None:
    try:
        conn.sendall(text.encode() + b"\n")
    except OSError:
        pass


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

"""A discrete-event engine for task graphs on per-GPU queues.

Tasks have a duration (seconds of work at full speed), a list of tasks they wait for, and a
kind. Queues (a GPU's compute stream, each communication queue, the host thread) are
encoded by the builder as a dependency on the queue's previous task, so a task starts at the
moment its last dependency finishes. Two kinds couple:

* ``COMPUTE`` tasks of a rank run at rate ``1 - f`` while at least one ``SM_COMM`` task of
  the same rank is running (an overlapped all-to-all holds the fraction ``f`` of the SMs,
  ``comm_sm_fraction``), at rate 1 otherwise; the engine re-times the running compute task
  whenever that changes (a fluid, processor-sharing model).
* everything else runs its duration.

The result holds each task's start and finish, and for each task the dependency that
finished last (what it waited for), from which :func:`critical_path` walks back from the
task that ends last.
"""

from __future__ import annotations

import heapq

FIXED, COMPUTE, SM_COMM = 0, 1, 2


class Graph:
    """Tasks in creation order; ``deps`` lists may be extended until :func:`run`."""

    def __init__(self):
        self.dur: list[float] = []
        self.deps: list[list[int]] = []
        self.kind: list[int] = []
        self.rank: list[int] = []
        self.label: list[tuple] = []

    def add(self, dur: float, deps, kind: int = FIXED, rank: int = -1,
            label: tuple = ()) -> int:
        self.dur.append(max(float(dur), 0.0))
        self.deps.append([d for d in deps if d is not None and d >= 0])
        self.kind.append(kind)
        self.rank.append(rank)
        self.label.append(label)
        return len(self.dur) - 1

    def __len__(self) -> int:
        return len(self.dur)


class Deadlock(RuntimeError):
    """Some tasks never became ready: the schedule's order contradicts its dependencies."""


def run(g: Graph, sm_fraction: float, ranks: int):
    """Simulate ``g``; returns ``(start, finish, waited_for)`` lists (seconds; ``-1`` for
    a task with no dependency)."""
    n = len(g)
    pending = [len(d) for d in g.deps]
    dependents: list[list[int]] = [[] for _ in range(n)]
    for t, ds in enumerate(g.deps):
        for d in ds:
            dependents[d].append(t)
    start = [-1.0] * n
    finish = [-1.0] * n
    waited = [-1] * n
    ready_at = [0.0] * n
    version = [0] * n
    slow = 1.0 - sm_fraction
    sm_active = [0] * max(ranks, 1)
    # running compute task per rank: [task, t_last, remaining_work, rate]
    running: list = [None] * max(ranks, 1)
    heap: list = []
    kind, dur, rank = g.kind, g.dur, g.rank
    push = heapq.heappush

    def retime(r: int, now: float) -> None:
        cur = running[r]
        if cur is None:
            return
        task, t_last, rem, rate = cur
        rem -= (now - t_last) * rate
        rate = slow if sm_active[r] > 0 else 1.0
        running[r] = [task, now, rem, rate]
        version[task] += 1
        push(heap, (now + max(rem, 0.0) / rate, task, version[task]))

    def begin(t: int, now: float) -> None:
        start[t] = now
        k = kind[t]
        if k == COMPUTE:
            r = rank[t]
            rate = slow if sm_active[r] > 0 else 1.0
            running[r] = [t, now, dur[t], rate]
            push(heap, (now + dur[t] / rate, t, version[t]))
        else:
            if k == SM_COMM and dur[t] > 0.0:
                r = rank[t]
                sm_active[r] += 1
                if sm_active[r] == 1:
                    retime(r, now)
            push(heap, (now + dur[t], t, version[t]))

    for t in range(n):
        if pending[t] == 0:
            begin(t, 0.0)
    done = 0
    while heap:
        now, t, ver = heapq.heappop(heap)
        if ver != version[t] or finish[t] >= 0.0:
            continue
        finish[t] = now
        done += 1
        k = kind[t]
        if k == COMPUTE:
            running[rank[t]] = None
        elif k == SM_COMM and dur[t] > 0.0:
            r = rank[t]
            sm_active[r] -= 1
            if sm_active[r] == 0:
                retime(r, now)
        for u in dependents[t]:
            if now >= ready_at[u]:
                ready_at[u] = now
                waited[u] = t
            pending[u] -= 1
            if pending[u] == 0:
                begin(u, now)
    if done < n:
        stuck = [i for i in range(n) if finish[i] < 0.0][:5]
        raise Deadlock(f"{n - done} of {n} tasks never ran, e.g. "
                       + "; ".join(str(g.label[i]) for i in stuck))
    return start, finish, waited


def critical_path(finish, waited, end_task: int) -> list[int]:
    """Tasks from the first to ``end_task``, each the dependency its successor waited for
    last."""
    path = []
    t = end_task
    while t >= 0:
        path.append(t)
        t = waited[t]
    return path[::-1]

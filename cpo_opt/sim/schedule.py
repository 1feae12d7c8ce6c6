"""Per-rank programs of the pipeline schedules: the order in which each pipeline rank runs
its forward / backward chunks and posts its point-to-point transfers.

A program is a list of items, in the order the rank's host issues them:

* ``("F", mb, stage)``: forward of micro-batch ``mb`` through virtual ``stage``;
* ``("B", mb, stage, zb)``: its backward; ``zb`` (DualPipe's zero-bubble steps): the
  weight-gradient GEMMs are deferred to a later ``W``;
* ``("W",)``: the oldest deferred weight-gradient set (first in, first out);
* ``("FB", fmb, fstage, bmb, bstage)``: a forward and a backward run as one merged pair
  (Megatron-Core's combined 1F1B for ``--overlap-moe-expert-parallel-comm``, DualPipe's
  overlapped forward-backward chunk): their layers interleave so that the all-to-alls of one
  run beside the other's compute;
* ``("P", sends, recvs)``: one blocking batch of point-to-point transfers (Megatron's
  ``batch_isend_irecv`` calls without ``--overlap-p2p-comm``, DualPipe's
  ``_commit_and_wait_comm``): the rank's next compute waits for all of them. Transfer keys
  are ``("a", mb, stage)`` (activations of ``stage`` sent to ``stage + 1``) and
  ``("g", mb, stage)`` (the input gradient of ``stage`` sent to ``stage - 1``).

Sources (read, not copied): Megatron-LM ``megatron/core/pipeline_parallel/schedules.py``
(``forward_backward_no_pipelining``, ``forward_backward_pipelining_without_interleaving``,
``forward_backward_pipelining_with_interleaving``, ``get_pp_rank_microbatches``,
``get_schedule_table``), ``combined_1f1b.py`` (``combined_1f1b_schedule_for_no_pipelining``,
the one extra warm-up micro-batch of the interleaved A2A overlap); deepseek-ai/DualPipe
``dualpipe/dualpipe.py`` (``DualPipe.step``, steps 1-8).
"""

from __future__ import annotations

Item = tuple


def no_pipelining(m: int, merged: bool) -> list[Item]:
    """``pp = 1``: each micro-batch's forward then backward; with the A2A overlap the first
    forward runs alone, then ``m - 1`` merged pairs (forward ``i + 1``, backward ``i``), then
    the last backward alone (Megatron-Core ``combined_1f1b_schedule_for_no_pipelining``)."""
    if not merged or m == 1:
        out: list[Item] = []
        for i in range(m):
            out += [("F", i, 0), ("B", i, 0, False)]
        return out
    out = [("F", 0, 0)]
    out += [("FB", i + 1, 0, i, 0) for i in range(m - 1)]
    return out + [("B", m - 1, 0, False)]


def one_f_one_b(pp: int, m: int, r: int) -> list[Item]:
    """Megatron's non-interleaved 1F1B on rank ``r``: ``min(pp - r - 1, m)`` warm-up
    forwards, then forward/backward pairs, then the cool-down backwards, with the blocking
    p2p calls where Megatron makes them (``recv_forward``, ``send_forward``,
    ``send_forward_recv_backward``, ``send_backward_recv_forward``, ``recv_backward``,
    ``send_backward``)."""
    last = pp - 1
    w = min(pp - r - 1, m)
    rem = m - w

    def a(mb):
        return [("a", mb, r)] if r < last else []

    def a_in(mb):
        return [("a", mb, r - 1)] if r > 0 else []

    def g(mb):
        return [("g", mb, r)] if r > 0 else []

    def g_in(mb):
        return [("g", mb, r + 1)] if r < last else []

    out: list[Item] = []
    for i in range(w):
        out += [("P", [], a_in(i)), ("F", i, r), ("P", a(i), [])]
    if rem > 0:
        out.append(("P", [], a_in(w)))
    for i in range(rem):
        out.append(("F", w + i, r))
        out.append(("P", a(w + i), g_in(i)))
        out.append(("B", i, r, False))
        if i == rem - 1:
            out.append(("P", g(i), []))
        else:
            out.append(("P", g(i), a_in(w + i + 1)))
    for i in range(rem, m):
        out += [("P", [], g_in(i)), ("B", i, r, False), ("P", g(i), [])]
    return [it for it in out if it[0] != "P" or it[1] or it[2]]


def schedule_table(m: int, vpp: int, group: int) -> list[tuple[int, int]]:
    """``(micro-batch, model chunk)`` of each virtual micro-batch id (Megatron-Core
    ``get_schedule_table``): micro-batches in groups of ``group``, each group through every
    chunk before the next group."""
    table = []
    for lo in range(0, m, group):
        hi = m if lo + group >= m else lo + group
        table += [(mb, c) for c in range(vpp) for mb in range(lo, hi)]
    return table


def interleaved_warmup(pp: int, vpp: int, r: int, group: int, merged: bool) -> int:
    """Warm-up forwards of rank ``r`` (Megatron-Core ``get_pp_rank_microbatches``):
    ``2 (pp - r - 1) + (vpp - 1) group``, one more with the A2A overlap."""
    return 2 * (pp - r - 1) + (vpp - 1) * group + (1 if merged else 0)


def interleaved(pp: int, vpp: int, m: int, r: int, merged: bool,
                warmup: int | None = None, group: int | None = None) -> list[Item]:
    """Megatron's interleaved 1F1B on rank ``r`` (chunk ``c`` of rank ``r`` is virtual
    stage ``c pp + r``): warm-up forwards, steady forward + backward (merged with the A2A
    overlap), cool-down backwards; one p2p batch after each step
    (``send_forward_recv_forward``, ``send_forward_backward_recv_forward_backward``,
    ``send_backward_recv_backward``). ``group``: micro-batches per group, Megatron's
    ``microbatch_group_size_per_vp_stage`` (default ``pp``; below ``pp`` Megatron refuses
    the plan, the simulator runs it with ``group = m``). ``warmup`` overrides the count."""
    group = group or min(pp, m)
    stages = pp * vpp
    total = m * vpp
    table = schedule_table(m, vpp, group)
    w = interleaved_warmup(pp, vpp, r, group, merged) if warmup is None else warmup
    w = min(w, total)
    all_warm = w == total
    rem = total - w

    def fwd(k):
        mb, c = table[k]
        return mb, c * pp + r

    def bwd(k):
        mb, c = table[k]
        return mb, (vpp - 1 - c) * pp + r

    def recv_a(k):
        if k >= total:
            return []
        mb, s = fwd(k)
        return [("a", mb, s - 1)] if s > 0 else []

    def recv_g(k):
        if k >= total:
            return []
        mb, s = bwd(k)
        return [("g", mb, s + 1)] if s < stages - 1 else []

    def send_a(k):
        mb, s = fwd(k)
        return [("a", mb, s)] if s < stages - 1 else []

    def send_g(k):
        mb, s = bwd(k)
        return [("g", mb, s)] if s > 0 else []

    out: list[Item] = [("P", [], recv_a(0))]
    for k in range(w):
        out.append(("F",) + fwd(k))
        recvs = recv_a(k + 1)
        if k == w - 1 and not all_warm:
            recvs = recvs + recv_g(0)
        out.append(("P", send_a(k), recvs))
    for k in range(rem):
        fk = k + w
        if merged:
            out.append(("FB",) + fwd(fk) + bwd(k))
        else:
            out += [("F",) + fwd(fk), ("B",) + bwd(k) + (False,)]
        out.append(("P", send_a(fk) + send_g(k), recv_a(fk + 1) + recv_g(k + 1)))
    if all_warm:
        out.append(("P", [], recv_g(0)))
    for k in range(rem, total):
        out.append(("B",) + bwd(k) + (False,))
        out.append(("P", send_g(k), recv_g(k + 1)))
    return [it for it in out if it[0] != "P" or it[1] or it[2]]


def megatron(pp: int, vpp: int, m: int, r: int, merged: bool) -> list[Item]:
    """The program Megatron-Core runs on rank ``r`` for this plan. ``merged``: the A2A
    overlap (``--overlap-moe-expert-parallel-comm``); Megatron-Core requires interleaving for
    it when ``pp > 1``: the non-interleaved case is simulated as the interleaved program
    with one chunk (``2 (pp - r - 1) + 1`` warm-up forwards; hypothetical, flagged by
    :func:`megatron_runnable`). With ``pp - r`` warm-up forwards instead, each merged step
    of rank ``r`` would wait for the whole merged step of rank ``r + 1`` (its backward
    needs that step's gradient), serialising the pipeline."""
    if pp == 1:
        return no_pipelining(m, merged)
    if vpp == 1 and not merged:
        return one_f_one_b(pp, m, r)
    if vpp == 1:
        return interleaved(pp, 1, m, r, True, group=group_size(pp, m))
    return interleaved(pp, vpp, m, r, merged, group=group_size(pp, m))


def group_size(pp: int, m: int) -> int:
    """Micro-batches per interleaving group: Megatron's default ``pp`` when it divides
    ``m``, else ``m`` (one group; Megatron runs that with
    ``--microbatch-group-size-per-virtual-pipeline-stage m``, and refuses ``m < pp``)."""
    return pp if m % pp == 0 else m


def megatron_runnable(pp: int, vpp: int, m: int, merged: bool) -> list[str]:
    """Why Megatron-Core would refuse this schedule (empty when it runs it as simulated)."""
    why = []
    if vpp > 1 and m < pp:
        why.append(f"interleaving needs m >= pp (m = {m}, pp = {pp}); simulated with "
                   f"one micro-batch group of {m}")
    elif vpp > 1 and m % pp:
        why.append(f"m = {m} is not a multiple of pp = {pp}: simulated with one "
                   f"micro-batch group of {m} (--microbatch-group-size-per-virtual-pipeline-stage "
                   f"{m}; Megatron's default group of pp refuses it)")
    if merged and pp > 1 and vpp == 1:
        why.append("the A2A overlap needs interleaving when pp > 1")
    return why


def dualpipe(pp: int, m: int, r: int) -> list[Item]:
    """DualPipe on rank ``r`` (deepseek-ai/DualPipe ``DualPipe.step``, its steps 1-8).

    Micro-batches ``0 .. m/2 - 1`` enter at rank 0 (direction 0: stage ``s`` on rank ``s``),
    ``m/2 .. m - 1`` at rank ``pp - 1`` (direction 1: stage ``s`` on rank ``pp - 1 - s``).
    Ranks in the second half run the mirror image (their "phase 0" is direction 1). P2P
    batches are posted where ``_commit_and_wait_comm`` commits them: before each compute
    chunk and at the end."""
    if pp % 2 or m % 2 or m < 2 * pp:
        raise ValueError(f"DualPipe needs an even pp and an even m >= 2 pp (pp={pp}, m={m})")
    half_ranks, half_m = pp // 2, m // 2
    second = r >= half_ranks
    half_rank = min(r, pp - 1 - r)
    middle = r in (half_ranks - 1, half_ranks)
    stage = (r, pp - 1 - r)  # stage run by this rank for direction 0 / 1
    first_st = (r == 0, r == pp - 1)  # direction d's first stage is here
    last_st = (r == pp - 1, r == 0)
    f_id, b_id = [0, 0], [0, 0]
    sf, rf, sb, rb = [0, 0], [0, 0], [0, 0], [0, 0]
    sends: list = []
    recvs: list = []
    out: list[Item] = []

    def d_of(phase):
        return phase ^ int(second)

    def mb(d, i):
        return i + d * half_m

    def recv_forward(phase):
        d = d_of(phase)
        if first_st[d]:
            return
        recvs.append(("a", mb(d, rf[d]), stage[d] - 1))
        rf[d] += 1

    def send_forward(phase):
        d = d_of(phase)
        if last_st[d]:
            return
        sends.append(("a", mb(d, sf[d]), stage[d]))
        sf[d] += 1

    def recv_backward(phase):
        d = d_of(phase)
        if last_st[d]:
            return
        recvs.append(("g", mb(d, rb[d]), stage[d] + 1))
        rb[d] += 1

    def send_backward(phase):
        d = d_of(phase)
        if first_st[d]:
            return
        sends.append(("g", mb(d, sb[d]), stage[d]))
        sb[d] += 1

    def commit():
        if sends or recvs:
            out.append(("P", list(sends), list(recvs)))
        sends.clear()
        recvs.clear()

    def f_item(phase):
        d = d_of(phase)
        item = ("F", mb(d, f_id[d]), stage[d])
        f_id[d] += 1
        return item

    def b_item(phase, zb):
        d = d_of(phase)
        item = ("B", mb(d, b_id[d]), stage[d], zb)
        b_id[d] += 1
        return item

    def forward_chunk(phase, recv=True, send=True):
        if recv:
            recv_forward(phase)
        commit()
        out.append(f_item(phase))
        if send:
            send_forward(phase)

    def backward_chunk(phase, zb=False, recv=True, send=True):
        if recv:
            recv_backward(phase)
        commit()
        out.append(b_item(phase, zb))
        if send:
            send_backward(phase)

    def forward_backward_chunk(p0, p1, recv0=True):
        if recv0:
            recv_forward(p0)
        recv_backward(p1)
        commit()
        f, b = f_item(p0), b_item(p1, False)
        out.append(("FB",) + f[1:] + b[1:3])
        send_forward(p0)
        send_backward(p1)

    def weight_chunk():
        commit()
        out.append(("W",))

    for _ in range((half_ranks - half_rank - 1) * 2):            # step 1: nF0
        forward_chunk(0)
    recv_forward(0)                                              # step 2: nF0F1
    for i in range(half_rank + 1):
        forward_chunk(0, recv=False, send=middle)
        recv_forward(0)
        forward_chunk(1, send=(not middle) or (i < half_rank))
        if not middle:
            send_forward(0)
    for _ in range(half_ranks - half_rank - 1):                  # step 3: nB1W1F1
        backward_chunk(1, zb=True)
        recv_forward(1)
        weight_chunk()
        forward_chunk(1, recv=False)
    for i in range(half_m - pp + half_rank + 1):                 # step 4: nF0B1F1B0
        if i == 0:
            if middle:
                forward_chunk(0, recv=False, send=False)
                send_forward(1)
                backward_chunk(1, send=False)
                send_forward(0)
                send_backward(1)
            else:
                forward_backward_chunk(0, 1, recv0=False)
        else:
            forward_backward_chunk(0, 1)
        forward_backward_chunk(1, 0)
    for _ in range(half_ranks - half_rank - 1):                  # step 5: nB1F1B0
        backward_chunk(1)
        forward_backward_chunk(1, 0)
    zb = False                                                   # step 6: nB1B0
    for i in range(half_rank + 1):
        if i == (half_rank + 1) // 2 and half_rank % 2 == 1:
            zb = True
        backward_chunk(1, zb=zb)
        if i == (half_rank + 1) // 2 and half_rank % 2 == 0:
            zb = True
        backward_chunk(0, zb=zb)
    for _ in range(half_ranks - half_rank - 1):                  # step 7: nWB0
        weight_chunk()
        backward_chunk(0, zb=True)
    for _ in range(half_rank + 1):                               # step 8: nW
        weight_chunk()
    commit()
    return out


def makespan(programs: list[list[Item]], fwd, bwd, wgrad=0.0, p2p: float = 0.0,
             blocking: bool = False, rank_of=None) -> float:
    """End of the last chunk of ``programs`` (one per rank) when every forward chunk takes
    ``fwd``, every backward ``bwd`` (of which ``wgrad`` is the weight-gradient part a
    zero-bubble ``B`` defers to its ``W``), a merged pair ``FB`` the two in sequence, and
    each transfer ``p2p``; ``fwd`` / ``bwd`` may be callables of the virtual stage.
    ``blocking``: p2p batches as in the simulator without p2p overlap (both sides post,
    both wait); else a transfer starts when its data is ready. The schedule alone, for
    checking the programs against published bubble formulas."""
    from cpo_opt.sim import engine

    def dur(x, stage):
        return x(stage) if callable(x) else x

    g = engine.Graph()
    f_end, f_start, b_end, b_start, trans = {}, {}, {}, {}, {}
    for r, prog in enumerate(programs):
        prev = None
        deferred: list[float] = []
        for it in prog:
            k = it[0]
            if k == "P":
                post = g.add(0.0, [prev])
                wait = g.add(0.0, [])
                for key in it[1]:
                    trans.setdefault(key, {})["s"] = (post, wait)
                for key in it[2]:
                    trans.setdefault(key, {})["r"] = (post, wait)
                if blocking:
                    prev = wait
                continue
            if k in ("F", "FB"):
                key = (it[1], it[2])
                f_start[key] = g.add(0.0, [])
                prev = g.add(dur(fwd, it[2]), [f_start[key], prev])
                f_end[key] = prev
            if k in ("B", "FB"):
                key = (it[1], it[2]) if k == "B" else (it[3], it[4])
                zb = k == "B" and it[3]
                b_start[key] = g.add(0.0, [f_end[key]])
                w = dur(wgrad, key[1])
                prev = g.add(dur(bwd, key[1]) - (w if zb else 0.0), [b_start[key], prev])
                b_end[key] = prev
                if zb:
                    deferred.append(w)
            if k == "W":
                prev = g.add(deferred.pop(0), [prev])
    for key, t in trans.items():
        kind, mb, st = key
        deps = [f_end[(mb, st)] if kind == "a" else b_end[(mb, st)]]
        if blocking:
            deps += [t["s"][0], t["r"][0]]
        x = g.add(p2p, deps)
        g.deps[f_start[(mb, st + 1)] if kind == "a" else b_start[(mb, st - 1)]].append(x)
        if blocking:
            g.deps[t["s"][1]].append(x)
            g.deps[t["r"][1]].append(x)
    _, finish, _ = engine.run(g, 0.0, 1)
    return max(finish)

"""The event simulator of one training step: one pipeline column as a task graph.

:func:`simulate` builds, for each pipeline rank, the program its schedule runs
(:mod:`cpo_opt.sim.schedule`), expands every forward / backward chunk into per-layer tasks on
the rank's queues, links the ranks by their point-to-point transfers, adds the data-parallel
traffic and the optimizer, and runs the graph (:mod:`cpo_opt.sim.engine`). Data, tensor and
expert replicas are symmetric: they appear as the communication they cause.

Queues per rank: ``comp`` (the compute stream), ``tp``, ``cp``, ``ep`` (communication),
``dp`` (gradient reduce-scatter / parameter all-gather), ``copy`` (host copies), ``host``
(the CPU thread that issues the kernels). What waits for what:

* Layer, forward: attention block (TP all-gather / reduce-scatter around its GEMMs, the CP
  ring exchange step by step beside the attention core) -> dense FFN, or -> router, EP
  dispatch (all-to-all, then the expert-TP all-gather), experts (shared experts with their
  TP pair), EP combine (expert-TP reduce-scatter, then all-to-all). Backward in reverse:
  combine-backward, experts, dispatch-backward, router + attention. ``recompute = full``
  re-runs the layer's forward, with its communication, before its backward.
* TP: with ``overlap_tp`` (and the TP group inside one domain: userbuffers need the
  scale-up fabric) each block's two collectives run on the ``tp`` queue beside the block's
  GEMMs (Transformer Engine's comm-GEMM overlap), holding SMs like an overlapped
  all-to-all; without it they block the compute stream. The expert-TP pair belongs to the
  dispatcher's all-to-alls (below). CP: ring step ``k`` of K/V runs while the attention
  core works on chunk ``k - 1`` (TE ring attention).
* EP without ``overlap_ep``: dispatch and combine block the compute stream. With it, the
  merged forward/backward pairs of the schedule run the two micro-batches' layers in
  Megatron-Core's order (``TransformerLayerSchedulePlan.run``): communication queue
  ``combine_b | dispatch_f, dispatch_b | combine_f``, compute
  ``pre_dispatch_f | mlp_b, mlp_f | pre_dispatch_b``, each waiting for its own data; while an
  all-to-all runs, the rank's compute runs at ``1 - comm_sm_fraction`` of its speed.
* PP: without ``overlap_p2p`` each p2p batch is posted when the rank's compute stream
  reaches it, a transfer starts when both its sender and its receiver have posted, and the
  rank's next compute waits for the whole batch (Megatron's ``batch_isend_irecv`` with
  ``batch_p2p_sync``, which also makes the host wait; DualPipe's ``_commit_and_wait_comm``).
  With ``overlap_p2p`` the receive is posted early: a transfer starts when its data is ready
  and only its consumer waits for it.
* DP (ZeRO 0-2, Megatron-Core DDP + distributed optimizer): gradients are reduced in buckets
  of the plan's ``ddp_bucket`` parameters (``0``: Megatron-Core core_v0.19.0's default
  ``max(4e7, 1e6 dp)``, ``dp`` without CP), filled layer by layer in backward order, the
  output layer opening the first bucket and the embedding closing the last (core_v0.19.0
  ``_ParamAndGradBuffer`` walks the parameters in reverse). With ``overlap_dp``: bucketed
  with per-bucket launch during the last micro-batch's backward only on pipeline rank 0's
  first chunk
  (``pp_rank > 0`` and later chunks are one bucket); non-interleaved ranks ``> 0`` reduce
  after their last backward, interleaved chunks ``pp_rank`` backward steps after their last
  micro-batch (``align_grad_reduce``), DualPipe ranks after their last chunk. Parameters are
  all-gathered at the start of the step, before the first forward that uses them
  (interleaved: chunks 0 and 1 at once, chunk ``j`` when the forward of virtual micro-batch
  ``(j - 1) group - pp_rank`` begins; non-interleaved: bucket by bucket, the next one
  prefetched when a bucket is first used). Without ``overlap_dp`` the reduction follows the
  rank's last chunk and the gather the optimizer. ZeRO 0 all-reduces (twice the bytes) and
  gathers nothing; ZeRO-3 gathers each layer's parameters before its forward and backward
  (prefetched one layer ahead) and reduce-scatters its gradients after its backward, every
  micro-batch. Then the gradient-norm all-reduce over all GPUs, and each rank's optimizer.
* Host: each part of a layer (attention, dense FFN, router, MoE rest) is issued by the rank's
  host thread at its launch cost; the part's first kernel can start once the host has
  issued it, and the part cannot finish before the host has issued all of it. A dropless
  MoE layer's forward makes the host wait for the router's tokens-per-expert counts on the
  GPU plus ``HOST_SYNC_S`` before it issues the dispatch. The host issues the whole program
  in order and runs ahead of the GPU wherever nothing makes it wait.

The step time is the end of the last optimizer update; the critical path is the chain of
tasks, each the one its successor waited for last, that ends there.
"""

from __future__ import annotations

import dataclasses

from cpo_opt.model.config import Model, Plan, System
from cpo_opt.sim import engine
from cpo_opt.sim import schedule as sched
from cpo_opt.sim.costs import Costs, costs as plan_costs, f
from cpo_opt.sim.engine import COMPUTE, FIXED, SM_COMM
from cpo_opt.sim.layout import Stage, megatron_layout, rank_of

BUCKET_MIN_PARAMS = 4e7
"""Megatron-Core DDP's default bucket: ``max(40_000_000, 1_000_000 * dp_size)`` parameters
(``DistributedDataParallel.__init__``, megatron/core/distributed)."""
BUCKET_PARAMS_PER_DP_RANK = 1e6


@dataclasses.dataclass(frozen=True)
class SimOptions:
    """Settings of the simulated software that are not plan keys.

    ``bucket_params``: gradient bucket size in parameters (Megatron ``--ddp-bucket-size``),
    replacing the plan's ``ddp_bucket``; ``None``: the plan's.
    ``bucket_all_ranks``: bucket every chunk of every rank (``None``: Megatron-Core's rule,
    pipeline rank 0's first chunk only).
    """

    bucket_params: float | None = None
    bucket_all_ranks: bool = False


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of the critical path: consecutive tasks of one chunk (or one task)."""

    name: str
    start_s: float
    end_s: float

    def __str__(self) -> str:
        return f"{self.start_s * 1e3:9.3f} - {self.end_s * 1e3:9.3f} ms  {self.name}"


@dataclasses.dataclass(frozen=True)
class RankTime:
    """Seconds one pipeline rank's compute stream was busy / idle during the step."""

    rank: int
    busy_s: float
    idle_s: float


@dataclasses.dataclass(frozen=True)
class SimResult:
    """Result of :func:`simulate`."""

    step_time_s: float
    critical_path: tuple[Segment, ...]
    per_rank: tuple[RankTime, ...]
    pipeline_s: float       # end of the last backward (or weight-gradient) chunk
    microbatches: int
    layout: tuple[Stage, ...]
    notes: tuple[str, ...]  # why Megatron-Core / DualPipe would not run it as simulated
    tasks: int

    def to_dict(self) -> dict:
        """The ``"simulated"`` object of ``evaluate --simulate --json`` (SI units): step
        time, critical path (stretches with start and end), path by kind, per-rank busy and
        idle seconds, notes."""
        return {
            "step_time_s": self.step_time_s,
            "critical_path": [{"name": s.name, "start_s": s.start_s, "end_s": s.end_s}
                              for s in self.critical_path],
            "critical_path_by_kind_s": self.path_totals(),
            "per_rank": [{"rank": r.rank, "busy_s": r.busy_s, "idle_s": r.idle_s}
                         for r in self.per_rank],
            "microbatches": self.microbatches,
            "notes": list(self.notes),
        }

    def path_totals(self) -> dict[str, float]:
        """Seconds of the critical path by kind (compute, host issue, each communication,
        pipeline transfers, DP, optimizer), largest first."""
        out: dict[str, float] = {}
        for seg in self.critical_path:
            kind = seg.name.split(": ", 1)[1] if ": " in seg.name else seg.name
            kind = _KIND.get(kind.split(" ")[0], kind) if not ": " in seg.name else kind
            out[kind] = out.get(kind, 0.0) + seg.end_s - seg.start_s
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def summary(self, path: bool = True) -> str:
        lines = [f"simulated step {self.step_time_s * 1e3:.3f} ms ({self.tasks} tasks, "
                 f"{self.microbatches} micro-batches)"]
        lines += [f"  rank {r.rank}: busy {r.busy_s * 1e3:.3f} ms, idle {r.idle_s * 1e3:.3f} ms"
                  for r in self.per_rank]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  critical path by kind: " + ", ".join(
            f"{k} {v * 1e3:.3f} ms" for k, v in self.path_totals().items()))
        if path:
            lines.append("  critical path:")
            lines += [f"    {s}" for s in self.critical_path]
        return "\n".join(lines)


_KIND = {"PP": "PP send/recv", "DP": "DP communication", "ZeRO-3": "ZeRO-3 communication",
         "optimizer": "optimizer",
         "gradient-norm": "gradient-norm all-reduce", "W": "compute"}


def _i(x) -> int:
    return int(round(f(x)))


def default_layout(model: Model, plan: Plan, costs: Costs | None = None) -> tuple[Stage, ...]:
    """The layout the plan asks for, as Megatron-Core would split it
    (:func:`cpo_opt.sim.layout.megatron_layout`): ``pipeline_layout = "even"``: Megatron's
    even split; ``"balanced"``: the embedding counted as one layer and the output layer with
    the loss as ``k_h = max(1, round(t_head / t_layer))`` layers (its kernel seconds over one
    MoE, else dense, layer's; :mod:`cpo_opt.model.pipeline`), so that the first stage holds
    ``c - 1`` and the last ``c - k_h`` of ``c = ceil((L + k_h + 1) / S)``; explicit
    ``first_stage_layers`` / ``last_stage_layers`` win. The middle stages share the rest
    (the first of them one more where it does not divide)."""
    layers = _i(model.layers)
    moe = f(model.experts) > 0
    dense = _i(model.dense_layers) if moe else layers
    dual = f(plan.schedule) > 0
    stages = _i(plan.pp) * (1 if dual else _i(plan.vpp))
    first = _i(getattr(plan, "first_stage_layers", -1.0))
    last = _i(getattr(plan, "last_stage_layers", -1.0))
    first = first if first >= 0 else None
    last = last if last >= 0 else None
    if stages > 1 and f(getattr(plan, "layout_balanced", 0.0)) > 0:
        if costs is None:
            raise ValueError("the balanced layout weighs the output layer: pass the costs")
        c = costs
        t_layer = (c.attention.fwd + c.attention.bwd
                   + ((c.router.fwd + c.router.bwd + c.shared.fwd + c.shared.bwd
                       + c.experts.fwd + c.experts.bwd) if moe
                      else (c.dense_ffn.fwd + c.dense_ffn.bwd)))
        k_h = max(1, int(round((c.head.fwd + c.head.bwd) / max(t_layer, 1e-30))))
        per = -(-(layers + k_h + 1) // stages)
        auto_first = min(max(per - 1, 0), layers)
        auto_last = min(max(per - k_h, 0), max(layers - auto_first, 0))
        if stages == 2 and first is None:
            first = layers - (last if last is not None else auto_last)
        first = auto_first if first is None else first
        last = auto_last if last is None else last
    return megatron_layout(layers, dense, stages, first, last)


class _Sim:
    """The graph of one step (module docstring)."""

    def __init__(self, model, system, plan, layout, options=SimOptions()):
        self.options = options
        self.tied = f(model.tied_embeddings) > 0
        self.c: Costs
        self.c, self.d = plan_costs(model, system, plan)
        self.plan = plan
        self.pp, self.vpp = _i(plan.pp), _i(plan.vpp)
        self.dual = f(plan.schedule) > 0
        self.layout = layout
        self.m = self.c.microbatches
        # Transformer Engine's TP overlap (userbuffers) needs the TP group in one domain
        self.ovl_tp = f(plan.overlap_tp) > 0 and self.c.tp_inside
        self.ovl_ep = f(plan.overlap_ep) > 0
        self.ovl_p2p = f(plan.overlap_p2p) > 0
        self.p2p_note = None
        if (not self.ovl_p2p and not self.dual and self.vpp > 1
                and self.c.microbatches % self.pp):
            # Megatron's interleaved schedule without p2p overlap needs m divisible by pp
            # (its blocking sends and receives deadlock on one micro-batch group of m)
            self.ovl_p2p = True
            self.p2p_note = ("interleaved without overlap_p2p needs m divisible by pp: p2p "
                             "simulated as overlapped")
        self.ovl_dp = f(plan.overlap_dp) > 0
        self.zero = _i(plan.zero)
        self.full = _i(plan.recompute) >= 2
        self.sm = f(system.constants.comm_sm_fraction)
        self.g = engine.Graph()
        self.tail: dict = {}
        self.half = self.m // 2

    # ------------------------------------------------------------------ primitives
    def on(self, r, stream, dur, deps, kind=FIXED, label=()):
        prev = self.tail.get((r, stream))
        t = self.g.add(dur, list(deps) + ([prev] if prev is not None else []), kind, r, label)
        self.tail[(r, stream)] = t
        return t

    def mark(self, deps, r=-1, label=()):
        return self.g.add(0.0, deps, FIXED, r, label)

    def host_pos(self, r):
        """The task after which the rank's host reaches the current point of its program
        (the issue of what comes next), or None at the start."""
        return self.tail.get((r, "host"))

    def direction(self, mb):
        return 1 if (self.dual and mb >= self.half) else 0

    def rank(self, mb, stage):
        return rank_of(stage, self.pp, self.dual, self.direction(mb))

    # ------------------------------------------------------------------ layer parts
    def _ops_attention(self, bwd, w_keep):
        c, a = self.c, self.c.attention
        gemm = a.gemm_b * w_keep if bwd else a.gemm_f
        rest = a.rest_b if bwd else a.rest_f
        core = a.core_b if bwd else a.core_f
        step = (2.0 if bwd else 1.0) * c.cp_step
        ops = []
        if self.ovl_tp:
            ops.append(("par", gemm, "tp", 2.0 * c.tp, "attention GEMMs + TP"))
        else:
            ops += [("x", "tp", c.tp, "TP all-gather", False), ("c", gemm, "attention GEMMs")]
        ops.append(("ring", c.cp, core, step, "attention core"))
        ops.append(("c", rest, "attention other"))
        if not self.ovl_tp:
            ops.append(("x", "tp", c.tp, "TP reduce-scatter", False))
        return ops

    def _ops_ffn(self, blk, bwd, w_keep, name):
        c = self.c
        gemm = blk.gemm_b * w_keep if bwd else blk.gemm_f
        rest = blk.rest_b if bwd else blk.rest_f
        if self.ovl_tp:
            return [("par", gemm, "tp", 2.0 * c.tp, f"{name} GEMMs + TP"),
                    ("c", rest, f"{name} other")]
        return [("x", "tp", c.tp, "TP all-gather", False), ("c", gemm + rest, name),
                ("x", "tp", c.tp, "TP reduce-scatter", False)]

    def _ops_router(self, bwd, w_keep):
        r = self.c.router
        return [("c", (r.gemm_b * w_keep + r.rest_b) if bwd else r.fwd, "router")]

    def _ops_shared(self, bwd, w_keep):
        """The shared experts (with their TP pair): Megatron-Core core_v0.19.0
        ``MoELayer.forward`` runs them (``shared_experts_compute``) before the router unless
        they overlap the dispatch (``moe_shared_expert_overlap``, off by default and under
        DeepEP/HybridEP)."""
        c = self.c
        return self._ops_ffn(c.shared, bwd, w_keep, "shared experts") if c.shared_tp else []

    def _ops_mlp(self, bwd, w_keep):
        e = self.c.experts
        return [("c", (e.gemm_b * w_keep + e.rest_b) if bwd else e.fwd, "experts")]

    def _a2a(self, dur, name, etp_first):
        """An all-to-all of the token dispatcher with its expert-TP collective (Megatron-Core
        ``MoEAlltoAllTokenDispatcher``: dispatch = all-to-all then all-gather over the
        expert-TP group, combine = reduce-scatter then all-to-all): on the ``ep`` queue,
        overlapped with the neighbour micro-batch under ``overlap_ep``."""
        a2a = ("x", "ep", dur, name, self.ovl_ep)
        etp = ("x", "ep", self.c.etp, "expert-TP " + ("reduce-scatter" if etp_first
                                                        else "all-gather"), self.ovl_ep)
        return [etp, a2a] if etp_first else [a2a, etp]

    def layer_nodes(self, moe, bwd, w_keep=1.0):
        """The nodes of one layer pass: ``(name, ops, host seconds, sync)`` in the order of
        the pass (MoE: pre-dispatch, dispatch, mlp, combine; backward reversed)."""
        c = self.c
        hb = 2.0 if bwd else 1.0
        if not moe:
            att = ("attention", self._ops_attention(bwd, w_keep), hb * c.host_attn, False)
            ffn = ("dense FFN", self._ops_ffn(c.dense_ffn, bwd, w_keep, "dense FFN"),
                   hb * c.host_dense_ffn, False)
            return [ffn, att] if bwd else [att, ffn]
        pre_ops = (self._ops_attention(bwd, w_keep) + self._ops_shared(bwd, w_keep)
                   + self._ops_router(bwd, w_keep))
        if bwd:
            pre_ops = (self._ops_router(bwd, w_keep) + self._ops_shared(bwd, w_keep)
                       + self._ops_attention(bwd, w_keep))
        pre = ("pre-dispatch", pre_ops, hb * (c.host_attn + c.host_router),
               (not bwd) and c.sync > 0)
        mlp = ("experts", self._ops_mlp(bwd, w_keep), hb * c.host_moe_mlp, False)
        if bwd:  # combine-backward is a dispatch of gradients, dispatch-backward a combine
            return [("combine-backward", self._a2a(c.combine_b, "EP combine-backward", False),
                     0.0, False), mlp,
                    ("dispatch-backward", self._a2a(c.dispatch_b, "EP dispatch-backward",
                                                    True), 0.0, False), pre]
        return [pre, ("dispatch", self._a2a(c.dispatch_f, "EP dispatch", False), 0.0, False),
                mlp, ("combine", self._a2a(c.combine_f, "EP combine", True), 0.0, False)]

    # ------------------------------------------------------------------ node emission
    def emit(self, r, node, frontier, label, gate=()):
        """Tasks of one node on rank ``r`` after ``frontier``; returns the new frontier."""
        name, ops, host, sync = node
        hA = hB = None
        if host > 0.0:
            first = min(self.c.host_launch, host)
            hA = self.on(r, "host", first, [], FIXED, label + ("host", name))
            hB = self.on(r, "host", host - first, [], FIXED, label + ("host", name))
        # a node is issued where the host has got to (after any host-device sync)
        gate_deps = [hA] if hA is not None else [self.tail.get((r, "host"))]
        fr = list(frontier) + list(gate)
        for op in ops:
            kind = op[0]
            if kind == "c":
                _, dur, what = op
                if dur <= 0.0:
                    continue
                fr = [self.on(r, "comp", dur, fr + gate_deps, COMPUTE, label + (what,))]
            elif kind == "x":
                _, stream, dur, what, overlapped = op
                if dur <= 0.0:
                    continue
                if overlapped:
                    fr = [self.on(r, stream, dur, fr + gate_deps, SM_COMM, label + (what,))]
                else:  # blocks the compute stream (NCCL on the current stream)
                    prev = self.tail.get((r, "comp"))
                    t = self.on(r, stream, dur, fr + gate_deps + [prev], FIXED,
                                label + (what,))
                    self.tail[(r, "comp")] = t
                    fr = [t]
            elif kind == "par":
                _, dc, stream, dx, what = op
                new = []
                if dc > 0.0:
                    new.append(self.on(r, "comp", dc, fr + gate_deps, COMPUTE, label + (what,)))
                if dx > 0.0:  # TE's userbuffers kernels hold SMs like the all-to-all
                    new.append(self.on(r, stream, dx, fr + gate_deps, SM_COMM,
                                       label + (what + " (comm)",)))
                fr = new or fr
            elif kind == "ring":
                _, n, core, step, what = op
                if core <= 0.0 and (n <= 1 or step <= 0.0):
                    continue
                if n <= 1 or step <= 0.0:
                    fr = [self.on(r, "comp", core, fr + gate_deps, COMPUTE, label + (what,))]
                    continue
                piece = core / n
                comp = self.on(r, "comp", piece, fr + gate_deps, COMPUTE,
                               label + (what + " 1/%d" % n,))
                comm = None
                for k in range(1, n):
                    comm = self.on(r, "cp", step, fr + gate_deps + ([comm] if comm else []),
                                   FIXED, label + ("CP ring step %d" % k,))
                    comp = self.on(r, "comp", piece, [comp, comm], COMPUTE,
                                   label + (what + " %d/%d" % (k + 1, n),))
                fr = [comp]
        end = self.mark(fr + ([hB] if hB is not None else []), r, label + (name, "end"))
        if sync:
            self.on(r, "host", self.c.sync, [end], FIXED, label + ("host-device sync",))
        return [end]

    # ------------------------------------------------------------------ chunks
    def stage_layers(self, stage):
        st = self.layout[stage]
        return [False] * st.dense + [True] * st.moe

    def w_keep(self, zb):
        return 0.5 if zb else 1.0

    def forward_chunk(self, r, mb, stage, frontier, gates=None, starts=None, rec=False):
        """Forward of ``mb`` through ``stage``: layers, then the output layer and loss."""
        lab = ("R" if rec else "F", r, mb, stage)
        fr = frontier
        z3 = self.zero >= 3 and not rec and self.ovl_dp
        layers = self.stage_layers(stage)
        block = self.zero >= 3 and not rec and not self.ovl_dp
        if block:  # ZeRO-3 without overlap: each gather on the compute stream's path
            fr = self.z3_block(r, self.z3_mats(stage), fr, lab + ("ZeRO-3 all-gather",))
        if z3:  # ZeRO-3: each layer's parameters, prefetched when the previous one starts
            emb = self.z3_chunk_gather(r, stage, [self.tail.get((r, "comp"))], lab)
            ag = self.z3_gather(r, layers, 0, [emb], lab)
        for i, moe in enumerate(layers):
            gate = list(gates.get(i, ())) if gates else []
            if z3:
                gate.append(ag)
            if gate or starts is not None:
                fr = [self.mark(list(fr) + gate, r, lab + (i, "start"))]
                if starts is not None:
                    starts[i] = self.host_pos(r)
            if z3:
                ag = self.z3_gather(r, layers, i + 1, fr, lab)
            if block:
                fr = self.z3_block(r, self.gather_time(*self.layer_params(moe)), fr,
                                   lab + (i, "ZeRO-3 all-gather"))
            fr = self.layer_forward(r, moe, fr, lab + (i,))
        if self.layout[stage].head and not rec:
            fr = self.emit(r, ("output layer", [("c", self.c.head.fwd, "output layer + loss")],
                               0.0, False), fr, lab + ("head",))
        return fr

    def layer_forward(self, r, moe, fr, lab):
        for node in self.layer_nodes(moe, False):
            fr = self.emit(r, node, fr, lab)
            if moe and node[0] == "experts" and self.c.offload > 0.0:
                self.on(r, "copy", self.c.offload, fr, FIXED, lab + ("offload to host",))
        return fr

    def backward_chunk(self, r, mb, stage, frontier, zb, ends=None):
        """Backward of ``mb`` through ``stage`` (``zb``: weight gradients deferred); returns
        ``(frontier, deferred weight-gradient seconds)``."""
        lab = ("B", r, mb, stage)
        wk = self.w_keep(zb)
        fr = frontier
        c = self.c
        deferred = 0.0
        if self.layout[stage].head:
            h = c.head
            fr = self.emit(r, ("output layer", [("c", h.gemm_b * wk + h.rest_b,
                                                 "output layer backward")], 0.0, False),
                           fr, lab + ("head",))
            deferred += h.gemm_b * (1.0 - wk)
        layers = self.stage_layers(stage)
        z3 = self.zero >= 3 and self.ovl_dp
        block = self.zero >= 3 and not self.ovl_dp
        if block:
            fr = self.z3_block(r, self.z3_mats(stage), fr, lab + ("ZeRO-3 all-gather",))
        if z3:
            emb = self.z3_chunk_gather(r, stage, [self.tail.get((r, "comp"))], lab)
            ag = self.z3_gather(r, layers, len(layers) - 1, [emb], lab)
        for i in reversed(range(len(layers))):
            if z3:
                fr = [self.mark(list(fr) + [ag], r, lab + (i, "start"))]
                ag = self.z3_gather(r, layers, i - 1, fr, lab)
            params = self.layer_params(layers[i])
            if block:
                fr = self.z3_block(r, self.gather_time(*params), fr,
                                   lab + (i, "ZeRO-3 all-gather"))
            fr = self.layer_backward(r, layers[i], fr, lab + (i,), wk)
            deferred += self.layer_wgrad(layers[i]) * (1.0 - wk)
            if z3:
                self.on(r, "dp", self.grad_time(*params), [fr[0]], FIXED,
                        lab + (i, "ZeRO-3 reduce-scatter"))
            if block:
                fr = self.z3_block(r, self.grad_time(*params), fr,
                                   lab + (i, "ZeRO-3 reduce-scatter"))
            if ends is not None:
                ends[i] = fr[0]
        if (z3 or block) and self.stage_params(stage)[1]:
            dur = self.grad_time(self.z3_mat_params(stage), 0.0)
            if block:
                fr = self.z3_block(r, dur, fr, lab + ("ZeRO-3 reduce-scatter",))
            else:
                self.on(r, "dp", dur, fr, FIXED,
                        lab + ("ZeRO-3 reduce-scatter of the embedding",))
        return fr, deferred

    def z3_mat_params(self, stage):
        return self.stage_params(stage)[1] * self.c.params_embedding

    def z3_mats(self, stage):
        """Seconds to gather ``stage``'s embedding / output matrices."""
        return self.gather_time(self.z3_mat_params(stage), 0.0)

    def z3_block(self, r, dur, fr, label):
        """A ZeRO-3 collective the compute stream waits for (no ``overlap_dp``)."""
        if dur <= 0.0:
            return fr
        t = self.on(r, "dp", dur, list(fr) + [self.tail.get((r, "comp"))], FIXED, label)
        self.tail[(r, "comp")] = t
        return [t]

    def z3_gather(self, r, layers, i, deps, lab):
        """ZeRO-3 all-gather of layer ``i``'s parameters (``None`` past the ends)."""
        if not 0 <= i < len(layers):
            return None
        return self.on(r, "dp", self.gather_time(*self.layer_params(layers[i])), deps, FIXED,
                       lab + (i, "ZeRO-3 all-gather"))

    def z3_chunk_gather(self, r, stage, fr, lab):
        """ZeRO-3: the embedding / output matrices of ``stage`` gathered at the chunk's
        start; returns the task the first layer's prefetch follows."""
        mats = self.stage_params(stage)[1]
        if not mats:
            return fr[0] if fr else None
        return self.on(r, "dp", self.gather_time(mats * self.c.params_embedding, 0.0),
                       list(fr), FIXED, lab + ("ZeRO-3 all-gather of the embedding",))

    def layer_wgrad(self, moe):
        c = self.c
        g = c.attention.gemm_b
        g += (c.router.gemm_b + c.shared.gemm_b + c.experts.gemm_b) if moe else c.dense_ffn.gemm_b
        return g

    def layer_backward(self, r, moe, fr, lab, wk):
        if self.full:
            for node in self.layer_nodes(moe, False):
                fr = self.emit(r, node, fr, lab + ("recompute",))
        for node in self.layer_nodes(moe, True, wk):
            if moe and node[0] == "experts" and self.c.offload > 0.0:
                back = self.on(r, "copy", self.c.offload, fr, FIXED, lab + ("reload from host",))
                fr = fr + [back]
            fr = self.emit(r, node, fr, lab)
        return fr

    def merged_chunk(self, r, fmb, fst, bmb, bst, f_front, b_front, gates=None, starts=None,
                     ends=None):
        """A forward and a backward chunk run as one merged pair (Megatron-Core
        ``TransformerModelChunkSchedulePlan.run`` / ``TransformerLayerSchedulePlan.run``)."""
        flab, blab = ("F", r, fmb, fst), ("B", r, bmb, bst)
        ff, bf = f_front, b_front
        if self.layout[bst].head:
            h = self.c.head
            bf = self.emit(r, ("output layer", [("c", h.bwd, "output layer backward")], 0.0,
                               False), bf, blab + ("head",))
        fl, bl = self.stage_layers(fst), self.stage_layers(bst)
        nb = len(bl)
        both = min(len(fl), nb)
        for i in range(both):
            j = nb - 1 - i
            gate = gates.get(i, ()) if gates else ()
            if gate or starts is not None:
                ff = [self.mark(list(ff) + list(gate), r, flab + (i, "start"))]
                if starts is not None:
                    starts[i] = self.host_pos(r)
            fn = self.layer_nodes(fl[i], False)
            if self.full:
                for node in self.layer_nodes(bl[j], False):
                    bf = self.emit(r, node, bf, blab + (j, "recompute"))
            bn = self.layer_nodes(bl[j], True)
            if fl[i] and bl[j]:
                pre_f, disp_f, mlp_f, comb_f = fn
                comb_b, mlp_b, disp_b, pre_b = bn
                bf = self.emit(r, comb_b, bf, blab + (j,))
                ff = self.emit(r, pre_f, ff, flab + (i,))
                bf = self.emit(r, mlp_b, bf, blab + (j,))
                ff = self.emit(r, disp_f, ff, flab + (i,))
                bf = self.emit(r, disp_b, bf, blab + (j,))
                ff = self.emit(r, mlp_f, ff, flab + (i,))
                ff = self.emit(r, comb_f, ff, flab + (i,))
                bf = self.emit(r, pre_b, bf, blab + (j,))
            else:
                # a dense layer has no all-to-all: pre_f, mlp_b, mlp_f, pre_b in the same
                # order (Noop dispatch / combine)
                f_pre, f_rest = fn[0], fn[1:]
                b_last, b_rest = bn[-1], bn[:-1]
                ff = self.emit(r, f_pre, ff, flab + (i,))
                for node in b_rest:
                    bf = self.emit(r, node, bf, blab + (j,))
                for node in f_rest:
                    ff = self.emit(r, node, ff, flab + (i,))
                bf = self.emit(r, b_last, bf, blab + (j,))
            if ends is not None:
                ends[j] = bf[0]
        for j in reversed(range(nb - both)):
            bf = self.layer_backward(r, bl[j], bf, blab + (j,), 1.0)
            if ends is not None:
                ends[j] = bf[0]
        for i in range(both, len(fl)):
            gate = gates.get(i, ()) if gates else ()
            if gate or starts is not None:
                ff = [self.mark(list(ff) + list(gate), r, flab + (i, "start"))]
                if starts is not None:
                    starts[i] = self.host_pos(r)
            ff = self.layer_forward(r, fl[i], ff, flab + (i,))
        if self.layout[fst].head:
            ff = self.emit(r, ("output layer", [("c", self.c.head.fwd, "output layer + loss")],
                               0.0, False), ff, flab + ("head",))
        return ff, bf

    # ------------------------------------------------------------------ programs
    def programs(self):
        pp, vpp, m = self.pp, self.vpp, self.m
        if self.dual:
            return [sched.dualpipe(pp, m, r) for r in range(pp)], []
        merged = self.ovl_ep and any(st.moe for st in self.layout)
        progs = [sched.megatron(pp, vpp, m, r, merged) for r in range(pp)]
        return progs, sched.megatron_runnable(pp, vpp, m, merged)

    def build(self):
        pp = self.pp
        progs, notes = self.programs()
        self.notes = list(notes) + ([self.p2p_note] if self.p2p_note else [])
        if self.ovl_p2p and self.vpp == 1 and self.pp > 1 and not self.dual:
            self.notes.append("Megatron forces overlap_p2p off without interleaving "
                              "(megatron/training/arguments.py); simulated as overlapped")
        c = self.c
        # chunk bookkeeping
        f_end, b_start_marks, f_start_marks, b_end = {}, {}, {}, {}
        b_layer_ends: dict = {}
        f_layer_starts: dict = {}
        transfers = {}   # key -> dict(sender_post, recv_post, ...)
        self.rank_end = [None] * pp
        self.rank_last_b = [None] * pp
        self.post_points: list[list] = [[] for _ in range(pp)]
        gates_by_rank = self.param_gates(progs)
        for r, prog in enumerate(progs):
            deferred: list[float] = []
            batch_waits = []
            for idx, item in enumerate(prog):
                # where the rank's stream is when it reaches this item
                self.post_points[r].append(self.host_pos(r))
                kind = item[0]
                if kind == "P":
                    _, sends, recvs = item
                    post = self.mark([self.tail.get((r, "comp"))], r, ("post", r))
                    wait = self.mark([], r, ("p2p wait", r))
                    for key in sends:
                        transfers.setdefault(key, {})["send_post"] = post
                        transfers[key]["send_wait"] = wait
                    for key in recvs:
                        transfers.setdefault(key, {})["recv_post"] = post
                        transfers[key]["recv_wait"] = wait
                    if not self.ovl_p2p:
                        batch_waits.append(wait)
                        self.tail[(r, "comp")] = wait
                        if not self.dual:  # batch_p2p_sync: torch.cuda.synchronize()
                            self.on(r, "host", 0.0, [wait], FIXED, ("p2p sync", r))
                    continue
                if kind == "F":
                    _, mb, st = item
                    start = self.mark([], r, ("F start", r, mb, st))
                    f_start_marks[(mb, st)] = start
                    starts = {} if (mb, st) in gates_by_rank[r] else None
                    gates = gates_by_rank[r].get((mb, st))
                    fr = self.forward_chunk(r, mb, st, [start], gates, starts)
                    if starts is not None:
                        f_layer_starts[(mb, st)] = starts
                    f_end[(mb, st)] = fr[0]
                elif kind == "B":
                    _, mb, st, zb = item
                    start = self.mark([f_end[(mb, st)]], r, ("B start", r, mb, st))
                    b_start_marks[(mb, st)] = start
                    ends = {}
                    fr, dw = self.backward_chunk(r, mb, st, [start], zb, ends)
                    b_layer_ends[(mb, st)] = ends
                    b_end[(mb, st)] = fr[0]
                    if zb:
                        deferred.append(dw)
                    self.rank_last_b[r] = fr[0]
                elif kind == "FB":
                    _, fmb, fst, bmb, bst = item
                    fs = self.mark([], r, ("F start", r, fmb, fst))
                    bs = self.mark([f_end[(bmb, bst)]], r, ("B start", r, bmb, bst))
                    f_start_marks[(fmb, fst)] = fs
                    b_start_marks[(bmb, bst)] = bs
                    starts = {} if (fmb, fst) in gates_by_rank[r] else None
                    gates = gates_by_rank[r].get((fmb, fst))
                    ends = {}
                    if self.ovl_ep and self.zero >= 3:  # ZeRO-3: whole chunks, prefetched
                        for key, mark in ((( fmb, fst), fs), ((bmb, bst), bs)):
                            dense, experts = self.bytes_of(key[1], self.whole(key[1]), True)
                            ag = self.on(r, "dp", self.gather_time(dense, experts), [], FIXED,
                                         ("ZeRO-3 all-gather", r, key))
                            self.g.deps[mark].append(ag)
                    if self.ovl_ep:
                        ff, bf = self.merged_chunk(r, fmb, fst, bmb, bst, [fs], [bs], gates,
                                                   starts, ends)
                    else:
                        ff = self.forward_chunk(r, fmb, fst, [fs], gates, starts)
                        bf, _ = self.backward_chunk(r, bmb, bst, [bs], False, ends)
                    if starts is not None:
                        f_layer_starts[(fmb, fst)] = starts
                    f_end[(fmb, fst)] = ff[0]
                    b_end[(bmb, bst)] = bf[0]
                    if self.ovl_ep and self.zero >= 3:
                        dense, experts = self.bytes_of(bst, self.whole(bst), True)
                        self.on(r, "dp", self.grad_time(dense, experts), bf, FIXED,
                                ("ZeRO-3 reduce-scatter", r, (bmb, bst)))
                    b_layer_ends[(bmb, bst)] = ends
                    self.rank_last_b[r] = bf[0]
                elif kind == "W":
                    dw = deferred.pop(0)
                    t = self.on(r, "comp", dw, [], COMPUTE, ("W", r, "weight gradients"))
                    self.rank_last_b[r] = t
            self.rank_end[r] = self.mark([self.tail.get((r, "comp"))] + [self.rank_last_b[r]],
                                         r, ("rank end", r))
        # point-to-point transfers
        for key, t in transfers.items():
            kind, mb, st = key
            producer = f_end[(mb, st)] if kind == "a" else b_end[(mb, st)]
            sender = self.rank(mb, st)
            deps = [producer]
            if not self.ovl_p2p:
                deps += [t.get("send_post"), t.get("recv_post")]
            x = self.g.add(c.p2p, deps, FIXED, sender, ("PP send", kind, mb, st))
            consumer = (f_start_marks[(mb, st + 1)] if kind == "a"
                        else b_start_marks[(mb, st - 1)])
            self.g.deps[consumer].append(x)
            if not self.ovl_p2p:
                for w in ("send_wait", "recv_wait"):
                    if t.get(w) is not None:
                        self.g.deps[t[w]].append(x)
        self.f_layer_starts, self.b_layer_ends, self.b_end = f_layer_starts, b_layer_ends, b_end
        self.progs = progs
        self.finish_step()

    # ------------------------------------------------------------------ DP and optimizer
    def rank_stages(self, r):
        """``[(chunk index, stage)]`` the rank holds, in chunk order."""
        if self.dual:
            return [(0, r), (1, self.pp - 1 - r)]
        return [(j, j * self.pp + r) for j in range(self.vpp)]

    def layer_params(self, moe):
        c = self.c
        if moe:
            return c.params_attn + c.params_moe_dense, c.params_moe_experts
        return c.params_attn + c.params_dense_ffn, 0.0

    def stage_params(self, stage):
        """``[(dense, experts)]`` per layer, and the embedding/head matrices of ``stage``."""
        per_layer = [self.layer_params(moe) for moe in self.stage_layers(stage)]
        st = self.layout[stage]
        return per_layer, (1 if st.embedding else 0) + (1 if st.head else 0)

    def rank_params(self, r):
        dense = experts = 0.0
        mats = 0
        for _, st in self.rank_stages(r):
            per_layer, e = self.stage_params(st)
            dense += sum(p[0] for p in per_layer)
            experts += sum(p[1] for p in per_layer)
            mats += e
        if mats == 2 and self.tied and (self.pp == 1 or self.dual):
            mats = 1  # one tied matrix serves both ends on this rank
        return dense + mats * self.c.params_embedding, experts

    def buckets(self, r, j, stage):
        """One chunk's gradient buckets, in backward order (last layers first), each a list
        of ``(layer, share of its parameters)``: Megatron-Core DDP buckets of the plan's
        ``ddp_bucket`` parameters (``0``: Megatron-Core's default ``max(4e7, 1e6 dp)``) on
        pipeline rank 0's first chunk (DualPipe: rank 0's), one bucket elsewhere (module
        docstring). A bucket closes once it holds the size, so a layer larger than what is
        left of it is split at that point, parameter by parameter as Megatron-Core's
        ``_ParamAndGradBuffer`` does (here at the exact size: a layer's tensors are much
        smaller than a bucket; D20); a bucket filled by the output layer alone closes with
        a zero share of the last layer, ready when that layer's backward ends."""
        per_layer, mats = self.stage_params(stage)
        n = len(per_layer)
        bucketed = self.ovl_dp and (self.options.bucket_all_ranks or (r == 0 and j == 0))
        if not bucketed or n == 0:
            return [self.whole(stage)]
        size = (self.options.bucket_params or f(self.plan.ddp_bucket)
                or max(BUCKET_MIN_PARAMS, BUCKET_PARAMS_PER_DP_RANK * self.c.dp))
        full = size * (1.0 - 1e-9)
        # the output layer, registered last, opens the first bucket; the embedding, first,
        # closes the last (core_v0.19.0 _ParamAndGradBuffer walks the parameters in reverse);
        # a tied matrix on a stage with both ends is the embedding's
        groups, cur, acc = [], [], self.head_params(stage)
        for i in reversed(range(n)):
            p = per_layer[i][0] + per_layer[i][1]
            left = 1.0
            while True:
                room = max(size - acc, 0.0)
                take = left if p * left <= room or p <= 0.0 else room / p
                cur.append((i, take))
                acc += p * take
                left -= take
                if acc >= full:
                    groups.append(cur)
                    cur, acc = [], 0.0
                if left <= 1e-12:
                    break
        if cur:
            groups.append(cur)
        return groups

    def head_params(self, stage):
        """Parameters of ``stage``'s output layer when it is a matrix of its own (in the first
        gradient bucket), else 0 (a tied one is the embedding's, in the last)."""
        st = self.layout[stage]
        own = st.head and not (self.tied and st.embedding)
        return self.c.params_embedding if own else 0.0

    def whole(self, stage):
        """Every layer of ``stage``, whole, as :meth:`bytes_of` takes them."""
        return [(i, 1.0) for i in range(len(self.stage_layers(stage)))]

    def bytes_of(self, stage, layers, with_emb, with_head=None):
        """Parameters of ``layers`` (``(layer, share)`` pairs) of ``stage``, with its
        embedding matrix (a tied output layer with it) when ``with_emb`` and its own output
        layer when ``with_head`` (default: as ``with_emb``)."""
        per_layer, mats = self.stage_params(stage)
        dense = sum(per_layer[i][0] * share for i, share in layers)
        experts = sum(per_layer[i][1] * share for i, share in layers)
        head = self.head_params(stage)
        with_head = with_emb if with_head is None else with_head
        dense += (mats * self.c.params_embedding - head) * with_emb + head * with_head
        return dense, experts

    def grad_time(self, dense, experts):
        c = self.c
        b = c.grad_bytes
        t = c.grad_dense(b * dense) + c.grad_experts(b * experts)
        return 2.0 * t if self.zero == 0 else t

    def gather_time(self, dense, experts):
        c = self.c
        b = c.gather_bytes
        return c.gather_dense(b * dense) + c.gather_experts(b * experts)

    def param_gates(self, progs):
        """Parameter all-gathers (ZeRO 1-2 with ``overlap_dp``) created before the programs
        are expanded: ``{rank: {(mb, stage): {layer: [gather task]}}}`` for each chunk's
        first forward."""
        gates = [dict() for _ in range(self.pp)]
        self.ag_pending = []  # (task, rank, program index | layer start key)
        if self.zero == 0 or self.zero >= 3 or not self.ovl_dp:
            return gates
        for r, prog in enumerate(progs):
            first_f = {}
            for idx, it in enumerate(prog):
                if it[0] in ("F", "FB"):
                    key = (it[1], it[2])
                    st = it[2]
                    first_f.setdefault(st, (key, idx))
            for j, st in self.rank_stages(r):
                if st not in first_f:
                    continue
                key, idx = first_f[st]
                groups = self.buckets(r, j, st)
                layer_gate = {}
                interleaved = self.vpp > 1 or self.dual
                if interleaved:
                    layers = [x for g in groups for x in g]
                    dense, experts = self.bytes_of(st, layers, True)
                    t = self.on(r, "dp", self.gather_time(dense, experts), [], FIXED,
                                ("DP parameter all-gather", r, "chunk", j))
                    if j >= 2 and not self.dual:
                        group = min(self.pp, self.m)
                        k = max((j - 1) * group - r, 0)
                        self.ag_pending.append((t, r, ("vid", k)))
                    for i, _ in layers:
                        layer_gate[i] = [t]
                else:
                    # the next bucket is dispatched when a bucket's wait ends (core_v0.19.0
                    # finish_param_sync), at the first use of its first layer; a layer split
                    # over buckets waits for all of them (D20), so a bucket that holds only
                    # part of the layer the next one shares is dispatched on the link's order
                    prev = None
                    for gi, g in enumerate(reversed(groups)):  # forward order
                        dense, experts = self.bytes_of(st, g, gi == 0, gi == len(groups) - 1)
                        t = self.on(r, "dp", self.gather_time(dense, experts), [], FIXED,
                                    ("DP parameter all-gather", r, "bucket", gi))
                        mine = {i for i, _ in g}
                        if prev is not None and min(prev) not in mine:
                            self.ag_pending.append((t, r, ("layer", key, min(prev))))
                        for i in mine:
                            layer_gate.setdefault(i, []).append(t)
                        prev = mine
                gates[r][key] = layer_gate
        return gates

    def finish_step(self):
        c, pp = self.c, self.pp
        # gathers launched at a point of the program
        for t, r, where in self.ag_pending:
            if where[0] == "vid":
                k = where[1]
                fidx = [i for i, it in enumerate(self.progs[r]) if it[0] in ("F", "FB")]
                if k < len(fidx):
                    p = self.post_points[r][fidx[k]]
                    if p is not None:
                        self.g.deps[t].append(p)
            else:
                _, key, layer = where
                s = self.f_layer_starts.get(key, {}).get(layer)
                if s is not None:
                    self.g.deps[t].append(s)
        # gradient reduction, launched in program order
        grads_done = []
        for r in range(pp):
            last = []
            launches = []
            for j, st in self.rank_stages(r):
                if self.zero >= 3:
                    continue
                groups = self.buckets(r, j, st)
                last_mb = self.last_backward(r, st)
                ends = self.b_layer_ends.get(last_mb, {})
                trigger, key = self.grad_trigger(r, j, st)
                for gi, g in enumerate(groups):
                    dense, experts = self.bytes_of(st, g, gi == len(groups) - 1, gi == 0)
                    if trigger is None:  # per-bucket hooks during the last backward
                        dep = ends.get(min(i for i, _ in g)) if g else self.b_end[last_mb]
                    else:
                        dep = trigger
                    launches.append(((key, gi), dep, self.grad_time(dense, experts),
                                     ("DP gradient reduce-scatter", r, "chunk", j, "bucket", gi)))
            for _, dep, dur, label in sorted(launches, key=lambda x: x[0]):
                last.append(self.on(r, "dp", dur, [dep], FIXED, label))
            grads_done.append(self.mark(last + [self.rank_end[r], self.tail.get((r, "dp"))],
                                        r, ("grads ready", r)))
        norm = self.g.add(c.other, grads_done, FIXED, -1, ("gradient-norm all-reduce",))
        self.opt_end = []
        for r in range(pp):
            dense, experts = self.rank_params(r)
            t = self.on(r, "comp", c.optimizer(dense, experts, self.plan, self.d), [norm],
                        COMPUTE, ("optimizer", r))
            if self.zero in (1, 2) and not self.ovl_dp:
                g = self.gather_time(dense, experts)
                t = self.on(r, "dp", g, [t], FIXED, ("DP parameter all-gather", r))
                self.tail[(r, "comp")] = t
            self.opt_end.append(t)
        self.step_end = self.mark(self.opt_end, -1, ("step end",))

    def last_backward(self, r, stage):
        """``(mb, stage)`` of the last backward of ``stage`` in rank ``r``'s program."""
        last = None
        for it in self.progs[r]:
            if it[0] == "B" and it[2] == stage:
                last = (it[1], it[2])
            elif it[0] == "FB" and it[4] == stage:
                last = (it[3], it[4])
        return last

    def grad_trigger(self, r, j, stage):
        """``(task, program position)`` after which chunk ``j``'s gradient reduction is
        launched; task ``None``: bucket by bucket during its last backward."""
        prog = self.progs[r]
        end = (self.rank_end[r], len(prog))
        if not self.ovl_dp or self.dual:
            return end
        last = self.last_backward(r, stage)
        bidx = [i for i, it in enumerate(prog) if it[0] in ("B", "FB")]
        order = [(prog[i][1], prog[i][2]) if prog[i][0] == "B" else (prog[i][3], prog[i][4])
                 for i in bidx]
        k = order.index(last)
        if self.vpp == 1:
            return (None, bidx[k]) if r == 0 else end
        # interleaved: pp_rank backward steps after the chunk's last micro-batch
        k += r
        if k >= len(order):
            return end
        return self.b_end[order[k]], bidx[k]

    # ------------------------------------------------------------------ result
    def result(self):
        start, finish, waited = engine.run(self.g, self.sm, self.pp)
        step = finish[self.step_end]
        busy = [0.0] * self.pp
        for t in range(len(self.g)):
            if self.g.kind[t] == COMPUTE and self.g.rank[t] >= 0:
                busy[self.g.rank[t]] += finish[t] - start[t]
        per_rank = tuple(RankTime(r, busy[r], step - busy[r]) for r in range(self.pp))
        path = engine.critical_path(finish, waited, self.step_end)
        pipe = max(finish[e] for e in self.rank_end)
        return SimResult(step, tuple(_segments(self.g, path, start, finish)), per_rank, pipe,
                         self.m, self.layout, tuple(self.notes), len(self.g))


def _chunk_name(label) -> str | None:
    if not label or label[0] not in ("F", "B", "R"):
        return None
    what = {"F": "forward", "B": "backward", "R": "recompute"}[label[0]]
    return f"rank {label[1]} {what} mb {label[2]} stage {label[3]}"


def _category(g, t) -> str:
    """What a task of a chunk is, for the critical path: compute, host issue, or the
    communication's name."""
    lab = g.label[t]
    if "host" in lab:
        return "host issue"
    if g.kind[t] == COMPUTE:
        return "compute"
    return str(lab[-1])


def _segments(g, path, start, finish):
    """Critical-path tasks merged into stretches of one chunk and one kind (compute, host,
    each communication); zero-length markers dropped."""
    out: list[Segment] = []
    cur, cur_start, cur_end = None, 0.0, 0.0
    for t in path:
        if finish[t] - start[t] <= 0.0:
            continue
        lab = g.label[t]
        chunk = _chunk_name(lab)
        if chunk:
            name = f"{chunk}: {_category(g, t)}"
        else:
            name = " ".join(str(x) for x in lab)
        if name == cur:
            cur_end = finish[t]
            continue
        if cur is not None:
            out.append(Segment(cur, cur_start, cur_end))
        cur, cur_start, cur_end = name, start[t], finish[t]
    if cur is not None:
        out.append(Segment(cur, cur_start, cur_end))
    return out


def simulate(model: Model, system: System, plan: Plan,
             layout: tuple[Stage, ...] | None = None,
             options: SimOptions = SimOptions()) -> SimResult:
    """Simulate one training step of ``plan`` (the config pytrees the model takes, one plan,
    host values); ``layout``: the virtual stages (default :func:`default_layout`).

    Returns :class:`SimResult`: the step time, its critical path, each pipeline rank's busy
    and idle compute time, and notes where the schedule is one Megatron-Core would refuse.
    """
    sim = _Sim(model, system, plan, layout, options)
    lay = layout if layout is not None else default_layout(model, plan, sim.c)
    sim.layout = lay
    want = _i(plan.pp) * (1 if sim.dual else _i(plan.vpp))
    if len(lay) != want:
        raise ValueError(f"layout has {len(lay)} stages, the plan {want}")
    sim.build()
    return sim.result()

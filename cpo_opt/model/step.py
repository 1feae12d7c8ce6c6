"""The step-time model: one optimizer step of a transformer on a two-tier GPU fabric.

``step_time(model, system, plan) -> StepTime`` is the one pure entry point. It is jit- and
vmap-friendly (every input is a numeric pytree leaf) and differentiable in every leaf. With
``temperature > 0`` the same formulas run with smooth surrogates (see :mod:`cpo_opt.model.smooth`);
that is the relaxed model the optimizer descends.

Step structure (Megatron-LM, 1F1B or interleaved 1F1B pipeline, Narayanan et al. 2021):

    s_f, s_b = forward, backward (+ recomputed forward) kernels of a rank, one micro-batch,
               each plus its layers' exposed TP, CP and EP communication
    t_rank   = hide(hide(s_f, zero3_fwd) + hide(s_b, zero3_bwd), pp_send_recv)
    t_pipe   = m t_max + bubble
    bubble   = (pp - 1) / vpp t_avg + (1 - 1/vpp) max(pp - m, 0) t_avg
    t_step  = t_pipe + exposed DP communication + optimizer update + other

``t_max`` is the slowest rank (``layers_rank`` layers plus the output layer: the last stage),
``t_avg`` the average rank (``L / pp`` layers, ``1 / pp`` of the output layer), ``m`` the
micro-batches per step. Pipeline schedule for any ``m`` (one rank's micro-batch time ``t``,
``vpp`` chunks of ``t / vpp``): the interleaved schedule is a pipeline of ``pp vpp`` virtual
stages whose stage ``j`` runs on device ``j mod pp``. With ``m >= pp`` devices are the
bottleneck: ``m t + (pp - 1) t / vpp`` (Narayanan et al. 2021 sec. 2.2, the bubble shrinks by
``vpp``). With ``m < pp`` no device is ever busy with two micro-batches, the chain of virtual
stages is: ``(m + pp vpp - 1) t / vpp = (m - 1) t / vpp + pp t``. Both are
``max(m t + (pp-1) t/vpp, (m-1) t/vpp + pp t)``, the formula above; with ``vpp = 1`` both are
``(m + pp - 1) t``; with ``m = 1`` interleaving gains nothing (one micro-batch must cross
every stage: ``pp t``). (Megatron-Core's interleaved schedule refuses ``m < pp``, and so do
the plan rules, :func:`cpo_opt.inputs.plan_rules.resolve_plan`; the formula keeps the
relaxed search's continuous degrees, which pass through such points, a schedule.)

DualPipe (``schedule = "dualpipe"``, DeepSeek-V3 report sec. 3.2.1; deepseek-ai/DualPipe):
rank ``r`` holds stages ``r`` and ``pp - 1 - r`` and half the micro-batches enter from each
end, so a rank still runs each micro-batch through one stage (``t`` as above; the head's
share on the pacing rank 0 is half). The repository's README gives its bubble (``m >= 2 pp``,
a plan rule) as ``(PP/2 - 1)(F&B + B - 3W)``; ``DualPipe.step``'s own order, replayed with
uniform chunks (:func:`cpo_opt.sim.schedule.dualpipe`, exact over pp 4-16 and any F, B, W),
idles ``n (F + D - W) + max(n (D - F) - F, 0)`` with ``n = pp/2 - 1``, ``F`` the forward
chunk, ``W`` the weight-gradient GEMMs the zero-bubble steps defer (half of the backward
GEMMs) and ``D = B - W`` the rest of the backward (the average rank's times): less than the
README's ``n (F + 2D - W)`` (simulator D11). A faster forward can lengthen the second term,
by less than it shortens the ``m >= 2 pp`` forwards of the steady state.

with ``hide(w, c) = max(w, c)`` when the communication ``c`` overlaps the window ``w`` and
``w + c`` when it does not. Every communication hides behind its own, disjoint part of the
kernels, and outer levels hide behind inner ones, so the model is monotone: faster kernels
or links never make a step slower (tested).

Overlap assumptions (Megatron defaults, each switchable in the plan):

* DP gradient reduction overlaps the backward of the last micro-batch, the ZeRO parameter
  all-gather the forward of the first (``overlap_dp``). The windows are taken from the
  rank's actual time for one micro-batch, ``t_rank`` (pipeline waiting for send/recv
  included: the rank is idle, its NIC is not): the reduction may use ``t_rank - fwd``, both
  together ``t_rank``: ``exposed = max(grad - (t_rank - fwd), grad + gather - t_rank, 0)``.
  Each term grows by at most what ``t_rank`` shrinks, and the step holds ``m`` of them, so a
  faster GPU never slows the step; a window of the bare backward kernels would shrink with
  faster GPUs while the pipeline wait replacing them does not (the reported counterexample,
  issue 14). The reduction's window opens when the first DP bucket is ready (the output
  layer's backward and what the bucket lacks of it in layers). Whatever the windows, the
  last of Megatron-Core's greedy buckets (the remainder, with the embedding) is reduced
  after the backward, and the full bucket beside it beyond the remainder's layers; without
  interleaving the first rank gathers the same two before its first forward
  (``_last_buckets``, simulator D2). That first rank's gathers hide only in its first
  forward (the next bucket dispatched as one is first used) and its reductions only in its
  last backward: ``max(t(first buckets), G - (1 - b) fwd) + max(t(last buckets),
  R - window)``, ``b`` the layers of the first gradient bucket (simulator D19). Megatron-Core
  buckets only pipeline rank 0's first chunk; there each of its ``n`` buckets is a collective
  paying its latency, ``n - 1`` latencies beyond the whole span's traffic (D20). ZeRO-3
  gathers and reduces every micro-batch, overlapped with that micro-batch's
  forward/backward; gathering one layer ahead, a rank
  that waits in the fill or drain holds only its first layer, so the bubble's chunks carry
  their ZeRO-3 exposure, less ``m`` times the pacing rank's excess exposure over them (its
  link backlog; simulator D8, round 15).
* TP communication is exposed unless ``overlap_tp`` (then only its excess over the layer's
  GEMMs, the attention GEMMs in MoE layers, is exposed; backward behind backward GEMMs).
  The overlap (Transformer Engine's userbuffers, ``--tp-comm-overlap``) moves data by
  peer-to-peer copies inside the NVLink domain, so a TP group that leaves its scale-up
  domain runs its collectives exposed; its kernels hold SMs like the EP all-to-all's
  (``comm_sm_fraction``, below; TE's userbuffers take up to ``UB_MAX_SM = 32``), so the
  GEMMs they overlap stretch the same way.
* EP all-to-all is exposed unless ``overlap_ep``; then it hides behind the wall time of a
  whole MoE layer of a neighbouring micro-batch, its TP/CP exposure included: Megatron-Core's
  1F1B A2A overlap (``--overlap-moe-expert-parallel-comm``) and DualPipe run the forward of
  micro-batch ``i + 1`` against the backward of ``i``, so the forward's dispatch and combine
  hide behind the neighbour's backward and the backward's behind its forward:
  ``exposed = max(c_f - w_b, 0) + max(c_b - w_f, 0)``, booked as the merged pair's forward
  part ``max(w_f, c_b)`` and backward part ``max(w_b, c_f)`` (each monotone in its own
  compute, which keeps the DP windows monotone). Only the steady state's micro-batches are
  merged: ``(m - 1) / m`` of them without a pipeline (none when ``m = 1``; Megatron-Core
  ``combined_1f1b_schedule_for_no_pipelining``); with a pipeline, ``(m vpp - w) / (m vpp)``
  of the virtual micro-batches, ``w = min(m vpp, (vpp - 1) g + 1)`` the warm-up forwards of
  the last pipeline rank, which paces the steady state (Megatron-Core
  ``get_pp_rank_microbatches``, ``g`` its micro-batch group: ``pp``, or ``m`` when ``pp``
  does not divide ``m``; :func:`cpo_opt.model.pipeline.steady_share`; the warm-up and the
  cool-down run unmerged). With ``m <= pp`` and a deep interleave almost nothing is merged:
  round 4's copper optima (pp 4, vpp 8, m 4) were 7-9% faster than the simulator with
  ``(m - 1) / m`` and agree within 1% with this (round 5). DualPipe keeps ``(m - 1) / m``.
  The rest expose their all-to-all.
  While it runs overlapped, the all-to-all holds ``comm_sm_fraction`` ``f`` of the SMs
  (DeepEP's 20 of H100's 132, HybridEP's 16 of B200's 148: Megatron-Core defaults), so the
  compute it overlaps runs on ``1 - f`` of them and stretches by ``f / (1 - f)`` of the
  overlapped time: ``max(c, w) + f/(1-f) min(c, w)`` for an all-to-all ``c`` and window ``w``
  (NVIDIA's Megatron-Core MoE report, arXiv 2603.07685, measures about 20% lower GEMM
  efficiency under DeepEP overlap). Monotone in both.
* CP ring exchange overlaps the attention core (Transformer Engine ring attention): step
  ``k`` of the ``cp - 1`` beside the core's piece ``k - 1`` of ``cp``, the last piece after
  the last step, so ``max(cp_time - (cp - 1) / cp core, 0)`` is exposed per pass.
* PP send/recv is exposed unless ``overlap_p2p`` (default on with interleaving), and, like
  the EP overlap, only ``(m - 1) / m`` of it can hide (a lone micro-batch's activations are
  on the critical path from stage to stage). Interleaved, the steady state hides it all, and
  the first micro-batch's forward and the last one's backward wait for every transfer
  between virtual stages: ``2 (pp vpp - 1)`` transfer times, whatever ``m`` (Megatron-Core's
  interleaved order replayed by :mod:`cpo_opt.sim`; simulator D4).
* The pacing rank holds ``layers_rank`` layers and the output layer (the last stage).
* Host issue: PyTorch issues each kernel from the CPU (``HOST_LAUNCH_S`` per kernel, a
  fraction of it for kernels captured in CUDA graphs, ``plan.cuda_graphs``); a layer's
  forward or backward takes ``max(GPU wall, host issue time)`` (the MoE dispatch
  synchronises host and GPU every layer, so the host cannot run ahead across layers).
  NVIDIA's Megatron-Core MoE report (arXiv 2603.07685) finds GB200 MoE training host-bound
  for fine-grained experts. The excess over the GPU wall is part of ``breakdown.compute``
  (``compute_detail.host``). Kernel counts: :func:`cpo_opt.model.layer_costs.host_kernels`.
  Besides, a dropless MoE layer's forward stalls the GPU once on the host-device sync of
  its tokens-per-expert counts (``HOST_SYNC_S``, :func:`layer_costs.sync_stall`), and with
  ``offload_expert_act`` the copies of the routed activations to and from the host, which
  run behind the layer's kernels, expose only their excess (both in ``compute_detail.host``).

``breakdown`` holds exposed times that add up to ``step_time_s``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from cpo_opt.model import compute
from cpo_opt.model import fusion
from cpo_opt.model import fabric
from cpo_opt.model import layer_costs
from cpo_opt.model import pipeline
from cpo_opt.model import smooth
from cpo_opt.model import transformer
from cpo_opt.model.config import Model, Plan, System, pytree
from cpo_opt.model.dims import dims
from cpo_opt.model.fabric import NO_COMM, Comm
from cpo_opt.model.memory import Memory, local_params, memory, routed_saved, sharded_params
from cpo_opt.model.structure import Structure, check, resolve
from cpo_opt.model.switch import decided, weight

TIE = 1e-12
"""Relative margin by which a pipeline rank must be slower than another to pace the step."""

OPTIMIZER_BYTES_PER_PARAM = 30.0
"""HBM bytes per locally updated parameter in the Adam step: read fp32 master, m, v and
gradient (16), write master, m, v (12) and the bf16 weight (2)."""
DDP_BUCKET_MIN_PARAMS = 4e7
"""Megatron-Core's default DP gradient bucket is ``max(4e7, 1e6 dp)`` parameters
(core_v0.19.0 ``DistributedDataParallel.__init__``, ``dp`` the data-parallel group without
CP); the plan's ``ddp_bucket`` (``--ddp-bucket-size``; Megatron-Bridge sets 128 Mi
parameters) replaces it. With overlapped DP the last two buckets' reduction is exposed
(``_last_buckets``): at ``dp = 9216`` on the default rule a bucket holds nearly half the
rank (docs/simulator.md, D2)."""
DDP_BUCKET_PARAMS_PER_DP_RANK = 1e6
BF16_MOMENTS_SAVING = 8.0
"""Bytes of those 30 saved with ``bf16_moments``: m and v read and written at 2 bytes."""


@pytree
class Breakdown:
    """Exposed seconds of each part of one step; they add up to the step time. ``tp_comm``
    holds the attention, dense-FFN and shared-expert TP pairs; ``ep_comm`` the dispatcher's
    exchange: the all-to-alls with the expert-TP pair around the experts."""

    compute: object
    tp_comm: object
    cp_comm: object
    ep_comm: object
    pp_comm: object
    dp_comm: object
    bubble: object
    optimizer: object
    other: object

    def total(self):
        return sum(getattr(self, f.name) for f in dataclasses.fields(self))


BREAKDOWN_PARTS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Breakdown))
"""The parts of :class:`Breakdown` in order: the one list every report, table and plot uses."""

@pytree
class ComputeDetail:
    """Kernel seconds per step by kind (inside ``breakdown.compute``)."""

    gemm: object
    attention: object
    memory_bound: object
    recompute: object
    host: object = 0.0

@pytree
class Traffic:
    """Bytes one GPU sends per step over each tier (for energy and link utilisation)."""

    scale_up_bytes: object
    scale_out_bytes: object

@pytree
class StepTime:
    """Result of :func:`step_time`; SI units (seconds, bytes, FLOP)."""

    step_time_s: object
    breakdown: Breakdown
    compute_detail: ComputeDetail
    memory: Memory
    traffic: Traffic
    fits_memory: object
    dp: object
    edp: object
    microbatches: object
    tokens_per_step: object
    flops_per_token: object
    tokens_per_s: object
    model_flops_per_gpu: object
    mfu: object
    working_gpus: object = 0.0
    """GPUs the plan's placement works (the rest of the cluster idles; aligned placement)."""
    pacing_rank: object = 0.0
    """The pipeline rank that paces the steady state (0 first, 1 middle, 2 last)."""
    first_stage_layers: object = 0.0
    middle_stage_layers: object = 0.0
    last_stage_layers: object = 0.0
    """Layers of the first, a (the largest) middle and the last virtual pipeline stage."""

def _exposed(comm_time, window, overlap, temperature):
    """Exposed part of a communication of ``comm_time`` that may hide behind ``window``:
    ``max(comm - window, 0)`` when overlapped (``overlap = 1``), all of it when not."""
    hidden = smooth.relu(comm_time - window, window + 1e-9, temperature)
    return comm_time + overlap * (hidden - comm_time)


def _hide(window, comm_time, overlap, temperature):
    """``window`` plus the exposed part of ``comm_time``: ``max(window, comm)`` when
    overlapped, ``window + comm`` when not."""
    return window + _exposed(comm_time, window, overlap, temperature)

def _last_buckets(model: Model, system: System, plan: Plan, d, pl, span, rank_layers,
                  bucket, bwd, fwd, temperature):
    """Exposed seconds of the gradient reduction after a rank's last backward and of the
    parameter gather before its first forward, set by the last two of Megatron-Core's DDP
    buckets.

    Megatron-Core fills its buckets in reverse parameter order, the output layer first and
    the embedding last, a new bucket once the current one reaches ``bucket`` parameters
    (core_v0.19.0 ``_ParamAndGradBuffer``). Over ``span`` (the rank; interleaved, its first
    chunk, reduced last and gathered first), with ``H`` the parameters before the embedding
    (the output layer and the layers, ``L`` of them in layers), the buckets are
    ``n = ceil(H / bucket)``: the last holds ``rho = min(H - bucket (n - 1), L)`` layer
    parameters and the embedding, the one beside it ``min(bucket, L - rho)`` layer parameters
    (each of the layers' dense / expert mix, timed on its own groups). The last is reduced
    after the backward (gathered before the forward) whatever the window; the one beside it
    waits only for the last one's layers, ``rho / rank_layers`` of the rank's backward
    ``bwd`` (forward ``fwd``)::

        exposed = t(last) + max(t(beside) - rho / rank_layers x window, 0)

    Also returned, for the caller's fluid bound (the whole span's traffic against the
    backward after the first bucket is ready): the share of the span's layers the first
    bucket waits for (the output layer opens it, so only what it lacks of a bucket).
    Returns ``(grad, gather, first share, buckets n)`` (simulator D2: Megatron-Core's default
    ``max(4e7, 1e6 dp)`` holds nearly half the rank at ``dp = 9216``)."""
    t = temperature
    dense, experts = local_params(model, plan, d, span)
    emb, _ = local_params(model, plan, d, dataclasses.replace(span, dense=0.0, moe=0.0,
                                                               head=0.0))
    ends, _ = local_params(model, plan, d, dataclasses.replace(span, dense=0.0, moe=0.0))
    l_dense = jnp.maximum(dense - ends, 0.0)
    layers = jnp.maximum(l_dense + experts, 1.0)
    before = (ends - emb) + layers
    size = jnp.maximum(bucket, 1.0)
    n = jnp.maximum(smooth.ceil(before / size, t), 1.0)
    rho = jnp.clip(before - size * (n - 1.0), 0.0, layers)
    beside = jnp.minimum(size, layers - rho)
    f_dense, f_exp = l_dense / layers, experts / layers
    last = _dp_comms(system, plan, pl, emb + rho * f_dense, rho * f_exp, d.is_moe)
    near = _dp_comms(system, plan, pl, beside * f_dense, beside * f_exp, d.is_moe)
    w = rho / jnp.maximum(rank_layers, 1.0)
    grad = last[0].time + smooth.relu(near[0].time - w * bwd, near[0].time + 1e-9, t)
    gather = last[1].time + smooth.relu(near[1].time - w * fwd, near[1].time + 1e-9, t)
    first = jnp.clip(jnp.maximum(size - (ends - emb), 0.0) / layers, 0.0, 1.0)
    return grad, gather, first, n


def _dp_comms(system: System, plan: Plan, pl: layer_costs.Placement, dense, experts,
              moe=1.0):
    """``(gradient reduction, parameter gather)`` of one step for ZeRO 0-2, and the
    per-micro-batch ``(gather, gather + reduce)`` of ZeRO-3. Gradients are reduced in fp32
    (4 bytes, Megatron's default with bf16; 2 with ``bf16_main_grads``), parameters gathered
    in bf16 (2 bytes; 1 in fp8 plans with ``fp8_param_gather``). A model without experts
    (``moe`` 0: :attr:`Dims.is_moe`, a Python 0.0 when the structure has no MoE blocks) has no
    expert-gradient group, so no collective (nor its latency) on it."""
    g_bytes = 4.0 - 2.0 * plan.bf16_main_grads
    p_bytes = 2.0 - plan.fp8 * plan.fp8_param_gather
    rs = fabric.reduce_scatter_on(g_bytes * dense, pl.dp, system)
    ag = fabric.reduce_scatter_on(p_bytes * dense, pl.dp, system)
    if not (decided(moe) and float(moe) == 0.0):  # the structure's own test (_GemmTable.add)
        rs = rs + moe * fabric.reduce_scatter_on(g_bytes * experts, pl.edp, system)
        ag = ag + moe * fabric.reduce_scatter_on(p_bytes * experts, pl.edp, system)
    z0 = jnp.where(plan.zero < 1, 1.0, 0.0)
    z3 = jnp.where(plan.zero >= 3, 1.0, 0.0)
    grad = (1.0 - z3) * (rs + z0 * rs)  # zero 0: all-reduce = 2 x reduce-scatter
    param = (1.0 - z3) * (1.0 - z0) * ag
    return grad, param, z3 * ag, z3 * (ag + rs)


def step_time(model: Model, system: System, plan: Plan, temperature: float = 0.0,
              stacked: bool = False, *, structure: Structure | None = None,
              every_field: bool = False) -> StepTime:
    """Time and memory of one training step; see the module docstring for the structure.

    Args:
      model, system, plan: config pytrees (SI units); leaves may be batched under ``vmap``.
      temperature: the Python number 0 for the exact model; a positive (possibly traced)
        number for the smooth relaxation.
      stacked: lay the GEMMs and parallel groups out as stacked arrays: the same numbers
        from a much smaller graph, which compiles and differentiates 2-3x faster; off, each
        is its own expression, which XLA fuses into one loop for the fastest batched
        evaluation. Gradient users (the relaxed search, ``sensitivity``) turn it on.
      structure: the static blocks (:class:`~cpo_opt.model.structure.Structure`; a ``jit``
        static argument): blocks it lacks are not built, ``None`` fields are blended per row.
        Default: read from the concrete leaves (:func:`~cpo_opt.model.structure.resolve`).
        An explicit structure that contradicts a concrete leaf raises ``ValueError``.
      every_field: the caller reads every :class:`StepTime` field of large batches
        (``bench``): the exact model then stores the blocks' kernels, the per-layer
        communication and exposures and each pipeline rank's times once for all outputs
        (:mod:`cpo_opt.model.fusion`; about half the compiled work on CPU, but more live
        buffers: ``reproduce --quick`` peaked at 14.4 GB with it on everywhere, 10.9 GB
        off). Default off: the program XLA fuses on its own. Same numbers either way.

    Returns:
      :class:`StepTime`.
    """
    t = temperature
    if structure is not None:
        check(structure, model, plan)
    s = resolve(structure, model, plan)
    d = dims(model, system, plan, t, s)
    att, dense_ffn, moe, head, shared_exp = layer_costs.blocks(model, system, plan, d,
                                                                stacked, s, t)
    # what many outputs share is computed once (:mod:`fusion`; exact model only)
    store = every_field and smooth.is_exact(t)
    one = fusion.unit(plan) if store else None

    def shared(value):
        return fusion.materialize(value, one) if store else value

    att, dense_ffn, moe, head, shared_exp = shared((att, dense_ffn, moe, head, shared_exp))
    dense_k = att + dense_ffn
    moe_k = att + moe
    full = jnp.where(plan.recompute >= 2, 1.0, 0.0)

    # --- communication of one dense and one MoE layer, each hidden behind its own part of
    # the layer's kernels (disjoint windows, so faster kernels never expose more in total)
    pl = layer_costs.placement(system, plan, d, t, stacked)
    tp_one = layer_costs.tp_collective(model, system, d, pl)
    tp_d = 4.0 * tp_one  # layer_costs.tp_dense_layer
    dense_only = s.moe is False  # no MoE blocks to build
    has_shared = 0.0 if dense_only else weight(s.shared_experts, model.shared_experts > 0)
    etp = NO_COMM if dense_only else layer_costs.etp_pair(model, plan, system, d, pl)
    tp_m = NO_COMM if dense_only else 2.0 * (1.0 + has_shared) * tp_one + etp  # tp_moe_layer
    cp_f = layer_costs.cp_layer(model, system, plan, d, pl, t)
    ep_f, ep_b = ((NO_COMM, NO_COMM) if dense_only
                  else layer_costs.ep_moe_layer(model, system, plan, d, pl, t))
    tp_one, tp_d, tp_m, etp, cp_f, ep_f, ep_b = shared((tp_one, tp_d, tp_m, etp, cp_f, ep_f,
                                                        ep_b))
    # TP communication overlap (Transformer Engine userbuffers) runs over the scale-up
    # fabric's peer-to-peer memory: a TP group that leaves its domain cannot overlap
    # (relaxed model: the domain holds the group; exact: no TP group straddles)
    # (1e-3: a domain size a derivative moves off its integer still holds the group)
    inside = (pl.tp.in_domain >= pl.tp.size * (1.0 - 1e-3) if smooth.is_exact(t)
              else d.fill.domain >= plan.tp * (1.0 - 1e-3))
    ovl_tp = plan.overlap_tp * jnp.where(jax.lax.stop_gradient(inside), 1.0, 0.0)
    ovl_ep = plan.overlap_ep
    # an overlapped collective holds comm_sm_fraction f of the SMs (DeepEP/HybridEP for the
    # all-to-all, Transformer Engine's userbuffers kernels for TP), so the compute it overlaps
    # runs on 1 - f of them: + f / (1 - f) of the overlapped time (max(c, w) + r min(c, w)
    # stays monotone in both)
    f_sm = system.constants.comm_sm_fraction
    r_sm = f_sm / (1.0 - f_sm)

    def overlapped(c, w, ovl):
        return _exposed(c, w, ovl, t) + ovl * r_sm * smooth.smin(c, w, t)

    # exposed seconds per layer: (forward, backward). TP: each block's all-gather and
    # reduce-scatter pair behind that block's own GEMMs (Transformer Engine's comm-GEMM
    # overlap pairs each collective with its adjacent GEMM: attention, dense FFN, shared
    # experts; simulator D6); the expert-TP pair is the dispatcher's, timed with the EP
    # exchange below (simulator D10). CP behind the attention core: ring step k of the cp - 1 runs
    # beside the core's piece k - 1 of cp, and the last piece waits for the last step, so
    # (cp - 1) max(step - core / cp, 0) = max(cp_time - (cp - 1) / cp core, 0) is exposed
    # (simulator D7)
    ring = (plan.cp - 1.0) / plan.cp
    pair = 2.0 * tp_one.time
    att_tp = (overlapped(pair, att.gemm_fwd, ovl_tp), overlapped(pair, att.gemm_bwd, ovl_tp))
    exp_dense = {
        "tp": (att_tp[0] + overlapped(pair, dense_ffn.gemm_fwd, ovl_tp),
               att_tp[1] + overlapped(pair, dense_ffn.gemm_bwd, ovl_tp)),
        "cp": (_exposed(cp_f.time, ring * att.attn_fwd, 1.0, t),
               _exposed(2.0 * cp_f.time, ring * att.attn_bwd, 1.0, t)),
    }
    exp_moe = {
        "tp": (att_tp[0] + has_shared * overlapped(pair, shared_exp.gemm_fwd, ovl_tp),
               att_tp[1] + has_shared * overlapped(pair, shared_exp.gemm_bwd, ovl_tp)),
        "cp": exp_dense["cp"],
    }
    # EP all-to-all with overlap_ep hides behind the whole MoE layer of another micro-batch
    # (DualPipe; Megatron-Core's A2A overlap): the layer's wall time, TP/CP exposure included
    wall_moe_f = moe_k.fwd + exp_moe["tp"][0] + exp_moe["cp"][0]
    wall_moe_b = moe_k.bwd + exp_moe["tp"][1] + exp_moe["cp"][1]
    # only micro-batches with a neighbour can overlap (Megatron 1F1B A2A overlap, DualPipe)
    n_mb = d.microbatches
    neighbour = pipeline.neighbour_share(n_mb, t)
    # Megatron-Core's combined 1F1B merges only the steady state (module docstring)
    ovl_ep = ovl_ep * pipeline.steady_share(plan, n_mb, t)
    # PP send/recv likewise hides only behind another micro-batch's compute; interleaved
    # (1F1B), the steady state hides it all and the fill and drain wait for every hop (below)
    inter = jnp.where(plan.vpp > 1.5, 1.0, 0.0) * (1.0 - plan.schedule)
    alone = jnp.minimum(neighbour, 1.0)
    ovl_p2p = plan.overlap_p2p * (alone + inter * (1.0 - alone))
    # --- PP send/recv (2 vpp transfers of b s h / (cp tp) per micro-batch) and DP/ZeRO
    has_pp = jnp.where(plan.pp > 1, 1.0, 0.0)
    cross = fabric.crosses(pl.pp, t)
    act_bytes = 2.0 * plan.micro_batch * model.seq_len * model.hidden / (plan.cp * plan.tp)
    p2p_one = fabric.p2p(act_bytes, cross, system)
    p2p = has_pp * 2.0 * plan.vpp * p2p_one
    # overlapped and interleaved, the first micro-batch's forward and the last one's backward
    # still wait for each of the 2 (pp vpp - 1) transfers between virtual stages, whatever m
    # (the simulator's schedule, test_p2p_latency_adds_once_per_virtual_stage_hop; D4)
    hops = (has_pp * plan.overlap_p2p * inter * 2.0 * (plan.pp * plan.vpp - 1.0)
            * p2p_one.time)
    # --- pipeline layout (:mod:`cpo_opt.model.pipeline`): the first, a middle and the last
    # rank; the balanced split weighs the output layer against one (MoE, else dense) layer
    t_layer = dense_k.fwd + dense_k.bwd
    if not dense_only:
        t_layer = t_layer + d.is_moe * (moe_k.fwd + moe_k.bwd - t_layer)
    lay = pipeline.layout(model, plan, d.microbatches, head.fwd + head.bwd, t_layer, s, t)
    # DP / ZeRO traffic of each rank's own parameters (and of the average rank's)
    held = [local_params(model, plan, d, load) for load in lay.ranks()]
    dp_comms = [_dp_comms(system, plan, pl, *h, moe=d.is_moe) for h in held]
    # ZeRO-3 gathers and reduces, per micro-batch, the parameters the micro-batch passes:
    # per_mb of the rank's (under DualPipe one of its two stages, the simulator's chunk);
    # the first layer's gather before the step is a share of the whole rank's (D8)
    z3_rank0 = dp_comms[0][2]
    dp_comms = [(g, p, x.per_mb * z_f, x.per_mb * z_b)
                for (g, p, z_f, z_b), x in zip(dp_comms, lay.ranks())]
    avg_load = pipeline.average(model, plan, s)

    # --- host issue (module docstring, "Host"): a layer pass runs at the slower of its GPU
    # wall time and the host's time to issue its kernels; a dropless MoE layer's forward
    # synchronises the two at its tokens-per-expert counts
    h_att, h_ffn, h_router, h_rest = layer_costs.host_issue_parts(model, system, plan, s)
    host_d = h_att + h_ffn

    def host_exposed(host_f, kern, exps):
        """Host time beyond a dense layer's forward / backward GPU wall (kernels +
        exposures): the host runs ahead across layers, so only its excess shows."""
        e_f = sum(e[0] for e in exps)
        e_b = sum(e[1] for e in exps)
        w_f = kern.fwd + e_f
        w_b = kern.bwd + e_b + full * w_f
        h_b = (2.0 + full) * host_f
        return (smooth.relu(host_f - w_f, w_f + 1e-9, t),
                smooth.relu(h_b - w_b, w_b + 1e-9, t))

    host_dense = host_exposed(host_d, dense_k, list(exp_dense.values()))
    exp_dense, host_dense = shared((exp_dense, host_dense))
    host_moe = (0.0, 0.0)
    exp_moe["ep"] = (0.0, 0.0)
    # what a recomputed forward (full recompute) exposes per layer: (dense, MoE)
    exp_rec = {kind: (exp_dense[kind][0], exp_moe[kind][0]) for kind in ("tp", "cp")}
    exp_rec["ep"] = (0.0, 0.0)
    if not dense_only:
        # MoE layer forward (module docstring, "Host"): G1 the GPU work before the sync
        # (attention with its TP/CP exposure, the shared experts, which Megatron-Core runs
        # before the router, and the router), G2 the rest (dispatch, experts,
        # combine), H1 / H2 the host issue of each part, s the sync latency. The host issues
        # H2 only after the sync and then H1 of the next layer, so the layer lasts
        # s + max(H2 + max(H1, C + G1), G1 + G2) (dropless), max(H1 + H2, G1 + G2) without
        # it: the combine C, the last of the layer's kernels, cannot run before H2 is issued
        # (without the A2A overlap; with it C runs beside another micro-batch: C = 0).
        router = layer_costs.router_kernels(model, system, plan, d, t)
        g1 = att.fwd + shared_exp.fwd + router.fwd + exp_moe["tp"][0] + exp_moe["cp"][0]
        g_c = wall_moe_f                          # G1 + G2 (compute stream, no EP)
        h1, h2 = h_att + h_router, h_rest
        sync = layer_costs.sync_stall(model, system)
        drop = layer_costs.dropless(model)
        c_f, c_b = ep_f.time + etp.time, ep_b.time + etp.time  # with the expert-TP pair

        def chain(wall, tail=0.0):
            tied = sync + smooth.smax(h2 + smooth.smax(h1, tail + g1, t), wall, t)
            free = smooth.smax(h1 + h2, wall, t)
            return free + drop * (tied - free)

        # without the A2A overlap the forward's dispatch and combine run on the compute
        # stream's critical path (G2 includes them); merged with a neighbour's backward
        # (Megatron-Core's 1F1B A2A overlap, DualPipe) the neighbour's all-to-all c runs
        # beside this forward's compute and host stall W and the pair ends at max(c, W + f c):
        # the compute runs on 1 - f of the SMs while c runs (simulator D5, D12)
        wall_nm = g_c + c_f
        host_nm = chain(wall_nm, 0.5 * c_b) - wall_nm  # the combine: half the backward's
        w_m = chain(g_c)
        ep_m_f = smooth.smax(c_b, w_m + f_sm * c_b, t) - w_m
        ep_m_b = smooth.smax(c_f, wall_moe_b + f_sm * c_f, t) - wall_moe_b
        # the forward's own all-to-all when not merged (also what a recomputed forward pays:
        # Megatron-Core refuses the A2A overlap with full recompute; simulator D9)
        exp_moe["ep"] = (c_f + ovl_ep * (ep_m_f - c_f), c_b + ovl_ep * (ep_m_b - c_b))
        host_f = host_nm + ovl_ep * ((w_m - g_c) - host_nm)
        # backward: the host runs ahead (no sync) and issues twice the forward's kernels; a
        # recomputed forward (full recompute) runs first, unmerged, with its own all-to-all
        # and its own host chain (simulator D9)
        w_b = wall_moe_b + exp_moe["ep"][1]
        host_b = smooth.relu(2.0 * (h1 + h2) - w_b, w_b + 1e-9, t) + full * host_nm
        exp_rec["ep"] = (0.0, c_f)
        # offloaded expert activations: out to the host in the forward, back in the backward,
        # on a copy engine beside everything the layer's part of the step does (kernels,
        # exposed communication, host stalls): only the excess over that wall is exposed, so
        # a shorter wall never exposes more in total (issue 21's offload break)
        t_off = (plan.offload_expert_act * routed_saved(model, plan, d)
                 / system.constants.host_link_bw)
        wf = g_c + exp_moe["ep"][0] + host_f
        wb = w_b + full * (g_c + c_f) + host_b
        off_f = smooth.relu(t_off - wf, wf + 1e-9, t)
        off_b = smooth.relu(t_off - wb, wb + 1e-9, t)
        host_moe = (host_f + off_f, host_b + off_b)

    exp_moe, host_moe, exp_rec = shared((exp_moe, host_moe, exp_rec))

    def rank(n_dense, n_moe, n_head, z3_fwd, z3_bwd):
        """One micro-batch on a rank passing through these blocks: kernels, then the
        layer-level exposures, then the rank's ZeRO-3 traffic hidden behind the forward /
        backward, then PP send/recv hidden behind the whole micro-batch (each level nests the
        one inside it)."""
        k = n_dense * dense_k + n_moe * moe_k + n_head * head
        layers_fwd = n_dense * dense_k.fwd + n_moe * moe_k.fwd
        fwd, bwd = k.fwd, k.bwd + full * layers_fwd
        out = {"fwd": fwd, "bwd": bwd, "kernels": k,
               "recompute": full * layers_fwd + k.rec_bwd}
        s_f, s_b = fwd, bwd
        for kind in ("tp", "cp", "ep"):
            e_f = n_dense * exp_dense.get(kind, (0.0, 0.0))[0] + n_moe * exp_moe[kind][0]
            e_b = n_dense * exp_dense.get(kind, (0.0, 0.0))[1] + n_moe * exp_moe[kind][1]
            e_r = n_dense * exp_rec[kind][0] + n_moe * exp_rec[kind][1]
            out[kind] = e_f + e_b + full * e_r
            s_f, s_b = s_f + e_f, s_b + e_b + full * e_r
        host_f = n_dense * host_dense[0] + n_moe * host_moe[0]
        host_b = n_dense * host_dense[1] + n_moe * host_moe[1]
        out["host"] = host_f + host_b
        s_f, s_b = s_f + host_f, s_b + host_b
        h_f = _hide(s_f, z3_fwd.time, plan.overlap_dp, t)
        h_b = _hide(s_b, z3_bwd.time, plan.overlap_dp, t)
        out["z3"] = (h_f - s_f) + (h_b - s_b)
        out["wall_fwd"], out["wall_bwd"] = h_f, h_b
        total = _hide(h_f + h_b, p2p.time, ovl_p2p, t)
        out["p2p"] = total - (h_f + h_b)
        out["total"] = total
        return out

    # the pacing rank is the slowest of the first, a middle and the last rank (a micro-batch
    # passes through per_mb of what a rank holds: half under DualPipe)
    ranks = [rank(x.dense * x.per_mb, x.moe * x.per_mb, x.head * x.per_mb, c[2], c[3])
             for x, c in zip(lay.ranks(), dp_comms)]
    ranks = shared(ranks)
    slow, pacing, pace_load = ranks[0], jnp.asarray(0.0), lay.first
    for i, (r, x) in enumerate(zip(ranks[1:], lay.ranks()[1:]), start=1):
        # a later rank paces only when clearly slower: ranks that tie (all bound by the same
        # ZeRO-3 traffic, say) keep the first, whatever rounding XLA's fusions give each copy
        # of this comparison (the selected fields must all come from one rank)
        take = r["total"] > slow["total"] * (1.0 + TIE)
        slow = {k: (layer_costs.Kernels(*(jnp.where(take, getattr(v, f), getattr(slow[k], f))
                                          for f in layer_costs.KERNEL_FIELDS))
                    if k == "kernels" else jnp.where(take, v, slow[k])) for k, v in r.items()}
        pacing = jnp.where(take, float(i), pacing)
        pace_load = pipeline.pick(take, x, pace_load)
    kernels, k_fwd, k_bwd = slow["kernels"], slow["fwd"], slow["bwd"]
    # --- pipeline (module docstring): steady state paced by the slowest rank, fill/drain by
    # the average rank; with fewer micro-batches than stages interleaving stops helping. The
    # 1F1B and interleaved: the fill and drain pass (pp - 1) / vpp chunks of the average rank,
    # each with its own ZeRO-3 exposure: a rank gathers one layer ahead of its compute, so
    # while it waits for its first activation (or its first gradient) it holds only the first
    # layer, and the fill's chain runs at the chunk's link-bound pace (simulator D8, round 15;
    # round 10 had let a link-bound rank hide the bubble behind its ZeRO-3 traffic)
    z_avg = _dp_comms(system, plan, pl, *local_params(model, plan, d, avg_load), moe=d.is_moe)
    fill_z = rank(avg_load.dense, avg_load.moe, avg_load.head, z_avg[2], z_avg[3])
    bubble_1f1b = ((plan.pp - 1.0) / plan.vpp
                   + (1.0 - 1.0 / plan.vpp) * smooth.relu(plan.pp - n_mb, 1.0, t)
                   ) * fill_z["total"]
    # ... but a pacing rank with more ZeRO-3 exposure than the chain's ranks keeps its link
    # busy through the fill and drain with its excess (its backlog of gathers and
    # reductions): the pipeline ends at max(m T_slow, m max(t_max, T_fill) + bubble), t_max
    # the largest micro-batch time of a rank without its exposed ZeRO-3 part, T_fill the
    # chain's (average) rank's with it: the steady state of the chain runs at the slower of
    # the compute-bound ranks and the average link-bound one, so the bubble shows only
    # beyond m times the pacing rank's excess over that (D8). Each term is monotone in the
    # hardware (T_fill's exposure alone is not: faster compute exposes more of it).
    t_no_z3 = ranks[0]["total"] - ranks[0]["z3"]
    for r in ranks[1:]:
        t_no_z3 = smooth.smax(t_no_z3, r["total"] - r["z3"], t)
    chain = smooth.smax(t_no_z3, fill_z["total"], t)
    z3_excess = smooth.relu(slow["total"] - chain, slow["z3"] + 1e-9, t)
    bubble_1f1b = smooth.relu(bubble_1f1b - n_mb * z3_excess, bubble_1f1b + 1e-9, t)
    # DualPipe (module docstring): n (F + D - W) + max(n (D - F) - F, 0), n = pp/2 - 1,
    # W = half the backward GEMMs, D = the rest of the backward, F = the forward (simulator D11)
    fill = rank(avg_load.dense, avg_load.moe, avg_load.head, NO_COMM, NO_COMM)
    n_half = jnp.maximum(plan.pp / 2.0 - 1.0, 0.0)
    w_g = 0.5 * fill["kernels"].gemm_bwd
    f_c, d_c = fill["total"] - fill["wall_bwd"], fill["wall_bwd"] - w_g
    bubble_dual = (n_half * (f_c + d_c - w_g)
                   + smooth.relu(n_half * (d_c - f_c) - f_c, fill["total"] + 1e-9, t))
    # under DualPipe a rank bound by its ZeRO-3 traffic keeps its link busy through the fill
    # and drain (its two stages' gathers run while its compute waits): the pipeline ends at
    # max(max_r m (t_r + z_r), max_r m t_r + bubble), t_r a rank's micro-batch without its
    # exposed ZeRO-3 part z_r, so only the bubble beyond the slowest rank's ZeRO-3 time
    # shows (simulator D8, D16)
    # (written as a gap, exactly 0 without ZeRO-3 exposure, so no rounding enters the bubble;
    # smoothed on the scale of that exposure, so the relaxed gap also vanishes without it
    # rather than leave softplus's t ln2 per micro-batch, m of them, off the bubble)
    z3_gap = smooth.relu(slow["total"] - t_no_z3, slow["z3"] + 1e-9, t)
    bubble_dual = smooth.relu(bubble_dual - n_mb * z3_gap, bubble_dual + 1e-9, t)
    bubble = bubble_1f1b + plan.schedule * (bubble_dual - bubble_1f1b)

    # gradient reduction and parameter gather of every rank (module docstring, "DP"). Without
    # interleaving they hide behind that rank's actual time for one micro-batch, which is the
    # pacing rank's (pipeline wait included: the rank is idle, its NIC is not):
    # max(grad_r - (t_pace - fwd_r), grad_r + gather_r - t_pace, 0). Interleaved, each chunk
    # reduces when its own last backward ends and gathers before its first forward
    # (Megatron-Core DDP with --overlap-grad-reduce / --overlap-param-gather and
    # align_grad_reduce), so every chunk's traffic but the first chunk's gather and the last
    # chunk's reduction hides behind the rest of the pipeline, W = t_pipe - t_pace / vpp:
    # max(c0 (grad_r + gather_r), grad_r + gather_r - W), c0 the share of the rank's
    # parameters in its first chunk (~1 / vpp; rank 0's with the embedding) (simulator D3).
    # The step waits for the last rank to finish (the max over ranks, each
    # term monotone, so their max is too).
    w_total = slow["total"]
    t_pipe = n_mb * w_total + bubble + hops
    w_pipe = t_pipe - w_total / plan.vpp
    # share of each rank's parameters in its first chunk (rank 0's holds the embedding), and
    # in its first layer (with the embedding on rank 0): the gradients the backward produces
    # last, reduced after it ends, and the parameters the forward needs first
    first_share, first_layer = [], []
    for h, chunk in zip(held, lay.first_chunks()):
        total = jnp.maximum(h[0] + h[1], 1.0)
        c_dense, c_exp = local_params(model, plan, d, chunk)
        first_share.append(jnp.clip((c_dense + c_exp) / total, 0.0, 1.0))
        n = jnp.maximum(chunk.dense + chunk.moe, 1.0)
        one = dataclasses.replace(chunk, dense=chunk.dense / n, moe=chunk.moe / n)
        l_dense, l_exp = local_params(model, plan, d, one)
        first_layer.append(jnp.clip((l_dense + l_exp) / total, 0.0, 1.0))
    bucket_params = jnp.where(plan.ddp_bucket > 0, plan.ddp_bucket,
                              jnp.maximum(DDP_BUCKET_MIN_PARAMS,
                                          DDP_BUCKET_PARAMS_PER_DP_RANK * d.dp))
    # without overlap each rank reduces after its own last backward, and rank r's ends r
    # backward chunks before rank 0's (the drain runs from the last rank to the first); the
    # gathers follow the optimizer, which waits for every rank's reduction (simulator D1)
    b_chunk = fill["wall_bwd"] / plan.vpp
    ovl = plan.overlap_dp
    # every DDP bucket is a collective of its own, paying the collective's latency (simulator
    # D20): a bucketed span's n buckets cost n - 1 latencies more than its traffic as one
    # collective (what grad_r / param_r count); the latency of each is that of no bytes
    lat_one = _dp_comms(system, plan, pl, 0.0, 0.0, d.is_moe)
    dp_step, gather_step = 0.0, 0.0
    for (grad_r, param_r, _, _), r, c0, load, chunk, lead, first, bucketed in zip(
            dp_comms, ranks, first_share, lay.ranks(), lay.first_chunks(),
            pipeline.drain_lead(plan), pipeline.gathers_on_first_use(inter),
            pipeline.bucketed_ranks()):
        # (the windows of the rank's layers: its micro-batch without the output layer)
        l_dense, l_exp = local_params(model, plan, d, dataclasses.replace(
            load, embedding=0.0, head=0.0))
        l_bwd = jnp.maximum(r["wall_bwd"] - load.head * head.bwd, 0.0)
        l_fwd = jnp.maximum(r["wall_fwd"] - load.head * head.fwd, 0.0)
        g_last, p_last, first_wait, n_buckets = _last_buckets(
            model, system, plan, d, pl, pipeline.pick(inter > 0.5, chunk, load),
            l_dense + l_exp, bucket_params, l_bwd, l_fwd, t)
        # the gradients reduce from the first bucket's readiness on: after the output
        # layer's backward and what the first bucket lacks of it in layers
        w_grad = w_total - r["wall_fwd"] - (r["wall_bwd"] - l_bwd) - first_wait * l_bwd
        # with overlap the bucketed span's collectives pay one latency each (D20)
        extra = (n_buckets - 1.0) * bucketed  # (a Python 0 where unbucketed: nothing built)
        lat_g, lat_p = ((extra * lat_one[0].time, extra * lat_one[1].time) if bucketed
                        else (0.0, 0.0))
        g_time, p_time = grad_r.time + lat_g, param_r.time + lat_p
        both = g_time + p_time
        hidden_1f1b = smooth.smax(smooth.relu(g_time - w_grad, w_grad + 1e-9, t),
                                  smooth.relu(both - w_total, w_total + 1e-9, t), t)
        hidden_inter = smooth.smax(c0 * (grad_r.time + param_r.time) + lat_g + lat_p,
                                   smooth.relu(both - w_pipe, w_pipe + 1e-9, t), t)
        hidden = hidden_1f1b + inter * (hidden_inter - hidden_1f1b)
        # the last gradient buckets are reduced after the last backward whatever the window:
        # the remainder with the embedding, and the full bucket beside it beyond the
        # remainder's layers (_last_buckets, over the rank or, interleaved, its first chunk);
        # without interleaving the first rank gathers the same two on first use, before its
        # first forward (simulator D2)
        hidden = smooth.smax(hidden, g_last, t) + first * p_last
        # the first rank of a 1F1B pipeline gathers bucket by bucket on first use, the next
        # bucket dispatched when a bucket's wait ends (core_v0.19.0 DDP forward pre-hook,
        # finish_param_sync / next_param_gather_bucket_group): its gathers hide only in its
        # first forward, before the layers of the last bucket in forward order (the first
        # gradient bucket, first_wait of them), and its reductions only in its last
        # backward, two windows one after the other (simulator D19):
        # gather = max(t(first buckets), G - (1 - first_wait) fwd), reduce as above
        w_gather = (1.0 - first_wait) * l_fwd
        g_side = smooth.smax(smooth.relu(g_time - w_grad, w_grad + 1e-9, t), g_last, t)
        p_side = smooth.smax(p_last, smooth.relu(p_time - w_gather, w_gather + 1e-9, t), t)
        hidden = hidden + first * (1.0 - plan.schedule) * smooth.relu(
            g_side + p_side - hidden, hidden + 1e-9, t)
        tail = smooth.relu(grad_r.time - lead * b_chunk, grad_r.time + 1e-9, t)
        dp_step = smooth.smax(dp_step, tail + ovl * (hidden - tail), t)
        gather_step = smooth.smax(gather_step, param_r.time, t)
    dp_step = dp_step + (1.0 - ovl) * gather_step
    # ZeRO-3: nothing hides the first layer's gather (the embedding's with it: ZeRO-3 gathers
    # layer by layer, one ahead) on the first rank before the step's first forward (D8)
    dp_step = dp_step + plan.overlap_dp * first_layer[0] * z3_rank0.time

    # --- optimizer and other
    # the rank's optimizer shard (the largest over ranks: every rank updates at once)
    updated = 0.0
    for dense_r, experts_r in held:
        updated = jnp.maximum(updated, sharded_params(dense_r, experts_r, plan, d, 1.0))
    # offloaded optimizer: fp32 gradients to the host and bf16 weights back over the host
    # link (both directions at once), the update in host memory (not timed: Grace/x86
    # memory streams the 30 bytes/param at a few hundred GB/s, in parallel on every GPU)
    off = plan.offload_optimizer
    host_link = 4.0 * updated / system.constants.host_link_bw
    opt_bytes = OPTIMIZER_BYTES_PER_PARAM - BF16_MOMENTS_SAVING * plan.bf16_moments
    optimizer = ((1.0 - off) * compute.memory_time(opt_bytes * updated, system)
                 + off * host_link)
    other = 2.0 * fabric.reduce_scatter_on(8.0, pl.world, system).time  # grad-norm / loss

    breakdown = Breakdown(
        compute=n_mb * (k_fwd + k_bwd + slow["host"]),
        tp_comm=n_mb * slow["tp"],
        cp_comm=n_mb * slow["cp"],
        ep_comm=n_mb * slow["ep"],
        pp_comm=n_mb * slow["p2p"] + hops,
        dp_comm=dp_step + n_mb * slow["z3"],
        bubble=bubble,
        optimizer=optimizer,
        other=other,
    )
    step = breakdown.total()

    n_dense, n_moe = pace_load.dense * pace_load.per_mb, pace_load.moe * pace_load.per_mb
    layers_rank = n_dense + n_moe
    detail = ComputeDetail(
        gemm=n_mb * (kernels.gemm_fwd + kernels.gemm_bwd),
        attention=n_mb * layers_rank * (att.attn_fwd + att.attn_bwd),
        memory_bound=n_mb * 3.0 * kernels.elem_fwd,
        recompute=n_mb * slow["recompute"],
        host=n_mb * slow["host"],
    )
    passes = 2.0 + full  # forward, backward, and a recomputed forward

    def rank_comm(x, c):
        """Bytes (and link time) one GPU of a rank with load ``x`` and DP/ZeRO traffic ``c``
        moves per step."""
        nd, nm = x.dense * x.per_mb, x.moe * x.per_mb
        per_mb = (passes * (nd * tp_d + nm * tp_m) + (nd + nm) * (3.0 + full) * cp_f
                  + nm * ((1.0 + full) * ep_f + ep_b) + p2p + c[2] + c[3])
        return n_mb * per_mb + c[0] + c[1]

    # traffic of the average GPU (first, pp - 2 middle and last ranks), so that GPUs x traffic
    # is the cluster's: the pacing rank's own bytes jumped when another rank came to pace
    # (a doubled domain "added" scale-out bytes: test_model_invariants)
    w_mid = jnp.maximum(plan.pp - 2.0, 0.0)
    w_last = jnp.minimum(jnp.maximum(plan.pp - 1.0, 0.0), 1.0)
    comms = [rank_comm(x, c) for x, c in zip(lay.ranks(), dp_comms)]
    comm = (comms[0] + comms[1] * w_mid + comms[2] * w_last) * (1.0 / (1.0 + w_mid + w_last))
    mem = memory(model, system, plan, d, lay)

    tokens = plan.global_batch * model.seq_len
    fpt = transformer.flops_per_token(model, s)
    tps = tokens / step
    flops_gpu = fpt * tps / d.fill.world  # per working GPU
    peak = jnp.where(plan.fp8 > 0, system.gpu.matmul_flops_fp8, system.gpu.matmul_flops_bf16)
    return StepTime(
        step_time_s=step,
        breakdown=breakdown,
        compute_detail=detail,
        memory=mem,
        traffic=Traffic(comm.up_bytes, comm.out_bytes),
        fits_memory=jnp.where(mem.total <= system.gpu.hbm_bytes, 1.0, 0.0),
        dp=d.dp,
        edp=d.edp,
        microbatches=n_mb,
        tokens_per_step=tokens,
        flops_per_token=fpt,
        tokens_per_s=tps,
        model_flops_per_gpu=flops_gpu,
        mfu=flops_gpu / peak,
        working_gpus=d.fill.world,
        pacing_rank=pacing,
        first_stage_layers=lay.first_stage,
        middle_stage_layers=lay.middle_stage,
        last_stage_layers=lay.last_stage,
    )


@functools.partial(jax.jit, static_argnames=("temperature", "structure"))
def step_time_jit(model, system, plan, temperature: float = 0.0,
                  structure: Structure | None = None) -> StepTime:
    """:func:`step_time` under ``jax.jit`` (one compilation per dtype, shape and
    ``structure``). The inputs are traced, so ``structure=None`` builds every block and
    blends them per row (:data:`~cpo_opt.model.structure.DYNAMIC`: one program for every
    model, e.g. ``validate``'s cases); the model's own structure builds only its blocks (half
    the compile time for a dense model; same numbers)."""
    return step_time(model, system, plan, temperature, structure=structure)

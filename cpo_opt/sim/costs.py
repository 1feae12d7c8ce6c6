"""Durations of the simulator's tasks, taken from the model's primitives (host floats).

The simulator reuses the *primitives* of :mod:`cpo_opt.model` for the duration of each task
(kernel times of a block, one collective, one transfer) and builds the *composition* itself:
which task waits for which, on which queue, overlapped with what. Everything here is per GPU
and per micro-batch, seconds, evaluated once per plan:

* kernels of the attention block, a dense FFN, an MoE FFN and the output layer:
  :func:`cpo_opt.model.layer_costs.blocks`. The MoE FFN is split into the router (its bf16 GEMM
  by :func:`cpo_opt.model.layer_costs.router_kernels`, its ``ROUTER_KERNELS`` small
  kernels), the shared experts (the MoE FFN of the model with and without them) and the
  routed experts (the rest), so that the parts that run before the dispatch, between
  dispatch and combine, and after are separate tasks. The totals are the model's.
* one TP collective (:func:`layer_costs.tp_collective`), one expert-TP collective (the rest
  of :func:`layer_costs.tp_moe_layer`), one CP ring step (:func:`layer_costs.cp_layer` over
  ``cp - 1``), the EP dispatch and combine (:func:`layer_costs.ep_moe_layer`: forward
  dispatch + combine, backward twice the bf16 combine), one PP transfer
  (:func:`cpo_opt.model.fabric.p2p`), and DP reduce-scatter / all-gather as a linear
  function of the bytes (:func:`fabric.reduce_scatter_on`: ``bytes / bandwidth + latency``).
* host issue seconds per part of a layer (:func:`layer_costs.host_kernels` times
  ``HOST_LAUNCH_S``, CUDA-graph captured kernels at ``graph_launch_fraction``) and the
  dropless MoE layer's host-device sync (:func:`layer_costs.sync_stall`).
* the weight-gradient share of a backward: half its GEMM time (dgrad and wgrad GEMMs have
  the same FLOPs; DualPipe's ``W``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cpo_opt.model import compute
from cpo_opt.model import fabric
from cpo_opt.model import layer_costs
from cpo_opt.model import transformer
from cpo_opt.model.config import Model, Plan, System, replace
from cpo_opt.model.dims import dims
from cpo_opt.model.memory import routed_saved, sharded_params
from cpo_opt.model.step import BF16_MOMENTS_SAVING, OPTIMIZER_BYTES_PER_PARAM
from cpo_opt.model.structure import resolve


def f(x) -> float:
    """A host float of a scalar leaf."""
    return float(np.asarray(x))


@dataclasses.dataclass(frozen=True)
class Block:
    """Forward / backward seconds of one block for one micro-batch: GEMMs and the rest
    (the attention core separately for the CP ring)."""

    gemm_f: float = 0.0
    rest_f: float = 0.0
    gemm_b: float = 0.0
    rest_b: float = 0.0
    core_f: float = 0.0
    core_b: float = 0.0

    @property
    def fwd(self) -> float:
        return self.gemm_f + self.rest_f + self.core_f

    @property
    def bwd(self) -> float:
        return self.gemm_b + self.rest_b + self.core_b


def _block(k: layer_costs.Kernels, core: bool = False) -> Block:
    g = {n: f(getattr(k, n)) for n in ("gemm_fwd", "gemm_bwd", "attn_fwd", "attn_bwd",
                                       "elem_fwd", "rec_bwd")}
    rest_f = g["elem_fwd"] + (0.0 if core else g["attn_fwd"])
    rest_b = 2.0 * g["elem_fwd"] + g["rec_bwd"] + (0.0 if core else g["attn_bwd"])
    return Block(g["gemm_fwd"], rest_f, g["gemm_bwd"], rest_b,
                 g["attn_fwd"] if core else 0.0, g["attn_bwd"] if core else 0.0)


def _minus(a: Block, b: Block) -> Block:
    return Block(*(max(getattr(a, n) - getattr(b, n), 0.0)
                   for n in ("gemm_f", "rest_f", "gemm_b", "rest_b", "core_f", "core_b")))


@dataclasses.dataclass(frozen=True)
class Linear:
    """A collective's seconds as ``bytes * per_byte + latency`` (0 for an empty one)."""

    per_byte: float
    latency: float

    def __call__(self, nbytes: float) -> float:
        return nbytes * self.per_byte + self.latency if nbytes > 0 else 0.0


def _linear(fn) -> Linear:
    a, b = f(fn(1e9)), f(fn(2e9))
    return Linear((b - a) / 1e9, max(2.0 * a - b, 0.0))


@dataclasses.dataclass(frozen=True)
class Costs:
    """Task durations of one plan (module docstring), seconds per micro-batch per GPU."""

    attention: Block
    dense_ffn: Block
    router: Block
    shared: Block
    experts: Block
    head: Block
    tp: float            # one TP all-gather or reduce-scatter of a layer activation
    etp: float           # one expert-TP collective around the experts
    shared_tp: bool      # MoE layers run a shared-expert TP pair
    tp_inside: bool      # the TP group lies inside one scale-up domain (TP overlap needs it)
    cp: int
    cp_step: float       # one forward ring step (backward: twice)
    dispatch_f: float
    combine_f: float
    dispatch_b: float
    combine_b: float
    p2p: float
    host_attn: float
    host_dense_ffn: float
    host_router: float
    host_moe_mlp: float
    host_launch: float
    sync: float
    offload: float       # expert-activation copy to (and from) the host per MoE layer
    params_attn: float   # parameters per GPU of one layer's parts (DP traffic, optimizer)
    params_dense_ffn: float
    params_moe_dense: float
    params_moe_experts: float
    params_embedding: float
    grad_dense: Linear   # gradient reduce-scatter over the dense DP group (per byte)
    grad_experts: Linear
    gather_dense: Linear  # parameter all-gather
    gather_experts: Linear
    grad_bytes: float    # bytes per gradient: 4 (fp32 main grads), 2 with bf16_main_grads
    gather_bytes: float  # bytes per gathered parameter: 2 (bf16), 1 with fp8_param_gather
    other: float         # gradient-norm and loss all-reduces over the world
    optimizer_bytes: float  # HBM bytes per locally updated parameter
    hbm_s_per_byte: float
    host_link_bw: float
    microbatches: int
    dp: float
    edp: float
    fp8: bool

    def optimizer(self, dense: float, experts: float, plan: Plan, d) -> float:
        """Seconds of the optimizer update of a rank holding ``(dense, experts)``
        parameters (ZeRO sharding: :func:`cpo_opt.model.memory.sharded_params`)."""
        updated = f(sharded_params(dense, experts, plan, d, 1.0))
        off = f(plan.offload_optimizer)
        return ((1.0 - off) * self.optimizer_bytes * updated * self.hbm_s_per_byte
                + off * 4.0 * updated / self.host_link_bw)


def costs(model: Model, system: System, plan: Plan):
    """``(Costs, dims)`` of one plan (host floats)."""
    s = resolve(None, model, plan)
    d = dims(model, system, plan, 0.0, s)
    att, dense_ffn, moe, head, _ = layer_costs.blocks(model, system, plan, d, False, s)
    moe_b = _block(moe)
    if s.shared_experts:
        no_shared = replace(model, shared_experts=0.0)
        moe_ns = layer_costs.blocks(no_shared, system, plan, d, False, None).moe_ffn
        shared = _minus(moe_b, _block(moe_ns))
    else:
        shared = Block()
    ovh = f(system.constants.kernel_overhead_s)
    if s.moe:  # the router's gating GEMM (bf16 in fp8 plans too) as the model times it
        r = layer_costs.router_kernels(model, system, plan, d)
        small = layer_costs.ROUTER_KERNELS * ovh
        router = Block(f(r.gemm_fwd), small, f(r.gemm_bwd), 2.0 * small)
    else:
        router = Block()
    experts = _minus(_minus(moe_b, shared), router)

    pl = layer_costs.placement(system, plan, d, 0.0)
    tpc = f(layer_costs.tp_collective(model, system, d, pl).time)
    pairs = 1.0 + (1.0 if s.shared_experts else 0.0)
    etp = 0.0
    if s.moe:
        tp_m = f(layer_costs.tp_moe_layer(model, system, plan, d, pl).time)
        etp = max(tp_m - 2.0 * pairs * tpc, 0.0) / 2.0
    cp = int(round(f(plan.cp)))
    cp_step = f(layer_costs.cp_layer(model, system, plan, d, pl, 0.0).time) / max(cp - 1, 1)
    if s.moe:
        ep_f, ep_b = layer_costs.ep_moe_layer(model, system, plan, d, pl, 0.0)
        combine = f(ep_b.time) / 2.0
        dispatch = f(ep_f.time) - combine
    else:
        combine = dispatch = 0.0
    act_bytes = 2.0 * plan.micro_batch * model.seq_len * model.hidden / (plan.cp * plan.tp)
    p2p = f(fabric.p2p(act_bytes, fabric.crosses(pl.pp, 0.0), system).time)

    k = system.constants
    (d_all, d_cap), (m_all, m_cap) = layer_costs.host_kernels(model, plan, s)
    launch = f(k.host_launch_s)
    saved = f(plan.cuda_graphs) * (1.0 - f(k.graph_launch_fraction))
    d_all, d_cap, m_all, m_cap = f(d_all), f(d_cap), f(m_all), f(m_cap)

    h, tp = model.hidden, plan.tp
    params_attn = f(transformer.attention_params(model, s) / tp + 2.0 * h)
    params_moe_dense = f(model.shared_experts * transformer.expert_params(model) / tp
                         + transformer.router_params(model)) if s.moe else 0.0
    params_moe_experts = f(model.experts / plan.ep * transformer.expert_params(model)
                           / plan.etp) if s.moe else 0.0

    opt_bytes = OPTIMIZER_BYTES_PER_PARAM - BF16_MOMENTS_SAVING * f(plan.bf16_moments)
    c = Costs(
        attention=_block(att, core=True), dense_ffn=_block(dense_ffn), router=router,
        shared=shared, experts=experts, head=_block(head),
        tp=tpc, etp=etp, shared_tp=bool(s.shared_experts),
        tp_inside=f(pl.tp.in_domain) >= f(pl.tp.size) * (1.0 - 1e-3), cp=cp, cp_step=cp_step,
        dispatch_f=dispatch, combine_f=combine, dispatch_b=combine, combine_b=combine,
        p2p=p2p,
        host_attn=d_cap * (1.0 - saved) * launch, host_dense_ffn=(d_all - d_cap) * launch,
        host_router=(m_cap - d_cap) * (1.0 - saved) * launch,
        host_moe_mlp=(m_all - m_cap) * launch, host_launch=launch,
        sync=f(layer_costs.sync_stall(model, system)) if s.moe else 0.0,
        offload=(f(plan.offload_expert_act * routed_saved(model, plan, d) / k.host_link_bw)
                 if s.moe else 0.0),
        params_attn=params_attn,
        params_dense_ffn=f(transformer.dense_ffn_params(model) / tp),
        params_moe_dense=params_moe_dense, params_moe_experts=params_moe_experts,
        params_embedding=f(model.vocab * h / tp),
        grad_dense=_linear(lambda b: fabric.reduce_scatter_on(b, pl.dp, system).time),
        grad_experts=_linear(lambda b: fabric.reduce_scatter_on(b, pl.edp, system).time),
        gather_dense=_linear(lambda b: fabric.reduce_scatter_on(b, pl.dp, system).time),
        gather_experts=_linear(lambda b: fabric.reduce_scatter_on(b, pl.edp, system).time),
        grad_bytes=4.0 - 2.0 * f(plan.bf16_main_grads),
        gather_bytes=2.0 - f(plan.fp8) * f(plan.fp8_param_gather),
        other=2.0 * f(fabric.reduce_scatter_on(8.0, pl.world, system).time),
        optimizer_bytes=opt_bytes,
        hbm_s_per_byte=f(compute.memory_time(1.0, system)),
        host_link_bw=f(k.host_link_bw),
        microbatches=int(round(f(d.microbatches))),
        dp=f(d.dp), edp=f(d.edp), fp8=f(plan.fp8) > 0,
    )
    return c, d

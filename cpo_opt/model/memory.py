"""HBM use per GPU on the most loaded pipeline rank, bytes.

Model state (mixed-precision Adam, Megatron-LM): bf16 weights (2 bytes/param; fp8 plans keep
an extra 1-byte fp8 copy, and only that copy with ``fp8_param_gather``: Megatron-Core
``--fp8-param-gather`` keeps the model's parameters as fp8 tensors, the fp32 master in the
optimizer), fp32 main gradients (4; 2 with ``bf16_main_grads``, Megatron-Core
``--main-grads-dtype bf16``), fp32 master weights + Adam moments (12; 8 with
``bf16_moments``: DeepSeek-V3 sec. 3.3.3 keeps both moments in bf16).
ZeRO shards over the data-parallel group of each parameter (``dp cp`` ranks for dense
weights, ``edp`` for experts): stage 1 the optimizer states, 2 also gradients, 3 also weights.
DualPipe (``schedule = "dualpipe"``, deepseek-ai/DualPipe: "Parameter per device 2x") puts
stage ``r`` and stage ``pp - 1 - r`` on rank ``r``: the rank holds two stages' weights and
gradients, and rank 0 both the embedding and the output head (DeepSeek-V3 sec. 3.2.3 places
them, with the MTP module, on the same rank). The two copies of a stage are data-parallel
replicas of each other, so ZeRO shards a stage's states over both (``2 x`` the group): the
sharded states per rank are those of 1F1B.
With ``offload_optimizer`` the optimizer states (master weights and moments, 12 bytes) live
in host memory (Megatron-Core ``--optimizer-cpu-offload``, used on GB200 in arXiv
2603.07685); the step then moves gradients and weights over the host link
(:mod:`cpo_opt.model.step`).

Activations per layer per micro-batch follow Korthikanti et al. 2022 (sec. 4, eq. 1-2),
generalised to GQA/MLA, gated FFNs and experts, with flash attention (no ``s^2`` term; the
softmax statistics, 4 bytes per head and token, are kept instead), and stored as current
Megatron-Core + Transformer Engine store them. ``w`` is the stored width of a GEMM input:
1 byte in fp8 plans (TE saves the quantized fp8 copy of each linear layer's input for the
weight gradient: "fp8 activation caching"), 2 in bf16. Per token:

* attention: norm input ``2h`` and the QKV (MLA: down-projection) input ``w h`` (both
  SP-split by ``tp``; the input is dropped when norms are recomputed, ``recompute_norm_act``);
  Q, K, V and the output for flash attention ``2 (a d_qk + kv d_qk + kv d_v + a d_v) / tp``
  and the output projection's input ``(w - 2)^+ ...`` (an extra fp8 copy, ``a d_v / tp``
  bytes, only in fp8); MLA latents: norm inputs ``2 (r_q + r_kv)``, up-projection inputs
  ``w (r_q + r_kv)`` (the latent norms' outputs: dropped with ``recompute_norm_act``),
  ``2 d_rope``; with ``recompute_mla_up`` (``--recompute-modules mla_up_proj``) the expanded
  Q, K, V are recomputed from the latents, not stored. With ``low_precision_storage`` (DeepSeek-V3 sec. 3.3.3: the output projection's input, which the
  attention backward also reads, is cached once in the 12-bit E5M6 format) the attention
  output is one ``1.5 a d_v / tp`` copy instead of bf16 + fp8.
* dense FFN (and shared experts): norm input ``2h`` and FC1 input ``w h`` (SP-split; the
  FC1 input dropped with ``recompute_norm_act``), FC1 output ``2 (n - 1) f / tp`` (the
  activation's input), activation output = FC2 input ``w f / tp`` (dropped with
  ``recompute_norm_act``: ``moe_act``/activation recompute).
* MoE FFN: norm input ``2h``, router input ``2h`` (SP-split), and per routed token copy
  (``k`` copies per token, times the capacity factor) the dispatched expert input ``w h``
  (kept in fp8 in fp8 plans: the grouped GEMM's quantised input, whatever precision the dispatch sent), FC1 output ``2 (n-1) f_e / etp`` and FC2 input
  ``w f_e / etp`` (dropped with activation recompute). Router probabilities are applied
  inside the expert activation (Megatron-Core ``TEGroupedMLP`` with
  ``weighted_bias_swiglu_impl``), so no expert-output copy is kept for the combine.
  With ``low_precision_storage`` (DeepSeek-V3 sec. 3.3.3: "we cache the inputs of the SwiGLU
  operator and recompute its output in the backward pass. These activations are also stored
  in FP8") the routed and shared experts' FC1 outputs are kept at 1 byte and their FC2
  inputs not at all (the dense layers' FFNs are unchanged).
* ``offload_expert_act`` (Megatron-Core fine-grained activation offloading, ``--offload-modules
  expert_fc1 moe_act``; arXiv 2603.07685 sec. 4.1.5 and Table 5, required for the Qwen3-235B
  MXFP8 GB200 run): the routed copies' FC1 inputs and activation inputs go to host memory after
  each layer's forward and come back before its backward; two layers' worth stay resident.
  The copies run on their own engine behind the layer's kernels (:mod:`cpo_opt.model.step`).
* ``recompute = "full"`` keeps only the layer input ``2h`` (SP-split) plus one layer's
  working set during its recomputation; ``"selective"`` equals ``"none"`` under flash
  attention (the attention core already recomputes in its backward); with materialized
  attention ``"none"`` also keeps ``5 a s^2 b / tp`` bytes of scores, mask and dropout output.

With bf16 and no module recompute the dense layer is Korthikanti's ``4h + 2 n f / tp`` per
token (the A100 set is unchanged); an MoE layer stores ``2h`` less per routed copy than
before (no combine buffer).

Pipelining (1F1B): the first rank holds ``min(microbatches, pp)`` micro-batches in flight;
interleaving multiplies this by ``1 + (pp - 1) / (pp vpp)`` (Korthikanti et al. sec. 4.2.3).
The last rank holds fp32 + bf16 logits for one micro-batch (6 bytes per token and vocab/tp).
DualPipe holds ``pp + 1`` micro-batches of one stage in flight (deepseek-ai/DualPipe,
"Activation Per Device PP+1", counting the warm-up of ``DualPipe.step``), and rank 0, which
also holds the last stage, both the embedding output and one micro-batch's logits.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cpo_opt.model import layer_costs
from cpo_opt.model import transformer
from cpo_opt.model.config import Model, Plan, System
from cpo_opt.model.dims import Dims
from cpo_opt.model.pipeline import Layout, RankLoad
from cpo_opt.model.structure import Structure

BF16 = 2.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Memory:
    """HBM bytes per GPU, by kind."""

    weights: object
    gradients: object
    optimizer: object
    activations: object
    reserved: object
    total: object
    rank: object = 0.0
    """Which pipeline rank this is (0 first, 1 middle, 2 last: ``pipeline.RANK_NAMES``)."""


def stages_held(plan: Plan):
    """Pipeline stages whose weights a rank holds: 2 under DualPipe, else 1."""
    return 1.0 + plan.schedule


def local_params(model: Model, plan: Plan, d: Dims, load: RankLoad):
    """``(dense, expert)`` parameters one pipeline rank holds (:mod:`cpo_opt.model.pipeline`:
    its layers, the embedding on the first stage, the output layer on the last; a rank
    holding both keeps one matrix when they are tied)."""
    h, s = model.hidden, d.structure
    mats = load.embedding + load.head - model.tied_embeddings * load.embedding * load.head
    emb = model.vocab * h / plan.tp * mats
    shared = model.shared_experts * transformer.expert_params(model) / plan.tp
    dense = (load.layers * (transformer.attention_params(model, s) / plan.tp + 2.0 * h)
             + load.dense * transformer.dense_ffn_params(model) / plan.tp
             + load.moe * (shared + transformer.router_params(model))) + emb
    experts = load.moe * model.experts / plan.ep * transformer.expert_params(model) / plan.etp
    return dense, experts


def _zero_div(stage, group, zero):
    """Divisor of a state that ZeRO shards from ``stage`` on: ``group`` if zero >= stage."""
    return jnp.where(zero >= stage, group, 1.0)


def sharded_params(dense, experts, plan: Plan, d: Dims, stage: float):
    """Of the rank's ``(dense, experts)`` parameters (:func:`local_params`), those whose state
    ZeRO stage ``stage`` leaves on it: divided by the data-parallel group of each (``dp cp``
    or ``edp``; under DualPipe both copies of a stage, ``2 x``) when ``zero >= stage``."""
    held = stages_held(plan)  # DualPipe's two copies of a stage shard its states together
    return (dense / _zero_div(stage, held * d.dp * plan.cp, plan.zero)
            + experts / _zero_div(stage, held * d.edp, plan.zero))


def model_state(model: Model, plan: Plan, d: Dims, load: RankLoad):
    """``(weights, gradients, optimizer)`` bytes of one pipeline rank."""
    dense, experts = local_params(model, plan, d, load)

    def sharded(stage):
        return sharded_params(dense, experts, plan, d, stage)

    # bf16 weights plus an fp8 copy in fp8 plans; with fp8 parameter gather the fp8 copy only
    fp8_only = plan.fp8 * plan.fp8_param_gather
    weights = (BF16 + plan.fp8 - BF16 * fp8_only) * sharded(3)
    grads = (4.0 - 2.0 * plan.bf16_main_grads) * sharded(2)
    opt_bytes = 12.0 - 4.0 * plan.bf16_moments  # fp32 master + two moments (fp32 or bf16)
    opt = (1.0 - plan.offload_optimizer) * opt_bytes * sharded(1)  # offloaded: in host memory
    return weights, grads, opt


def routed_saved(model: Model, plan: Plan, d: Dims):
    """Bytes one MoE layer and micro-batch saves for the routed experts' backward: per routed
    copy the dispatched FC1 input ``w h`` and the activation's input (FC1 output)
    ``2 (n - 1) f_e / etp`` (what ``offload_expert_act`` moves to host memory)."""
    w = jnp.where(plan.fp8 > 0, 1.0, BF16)
    n = transformer.ffn_matrices(model)
    copies = layer_costs.expert_tokens(model, plan, d) * model.experts / plan.ep
    act_in = BF16 - plan.low_precision_storage  # SwiGLU input cached in fp8 (DeepSeek-V3)
    return copies * (w * model.hidden + act_in * (n - 1.0) * model.expert_ffn_hidden / plan.etp)


def layer_activations(model: Model, plan: Plan, d: Dims):
    """``(dense_layer, moe_layer)`` activation bytes of one layer and micro-batch (with
    ``offload_expert_act`` the offloaded :func:`routed_saved` bytes are not counted here)."""
    h, a, kv, tp = model.hidden, model.heads, model.kv_heads, plan.tp
    w = jnp.where(plan.fp8 > 0, 1.0, BF16)          # stored width of a GEMM input
    keep_in = 1.0 - plan.recompute_norm_act          # norm outputs / activation outputs kept
    seq = (BF16 + keep_in * w) * h * d.tokens_sp
    qkv = BF16 * (a * d.dqk + kv * d.dqk + kv * d.dv) / tp
    mla_up = weight_of(model.mla) * plan.recompute_mla_up
    # attention output: bf16 for the attention backward plus, in fp8, the output projection's
    # fp8 input; low_precision_storage: one 12-bit (E5M6) copy serving both
    lps = plan.low_precision_storage
    out_bytes = (1.0 - lps) * (BF16 + jnp.where(plan.fp8 > 0, 1.0, 0.0)) + lps * 1.5
    heads = (1.0 - mla_up) * qkv + out_bytes * a * d.dv / tp + 4.0 * a / tp
    # latent norm inputs (bf16) and up-projection inputs (the latent norms' outputs, dropped
    # when norms are recomputed), the rope key
    latents = ((BF16 + keep_in * w) * (model.q_lora_rank + model.kv_lora_rank)
               + BF16 * model.qk_rope_head_dim)
    attn = seq + d.tokens * (heads + model.mla * latents)
    # materialized attention keeps softmax output, dropout mask and output: 5 a s^2 b / tp
    # bytes, unless selective recompute drops them (Korthikanti et al. 2022, eq. 1-2)
    keep = (1.0 - plan.flash_attention) * jnp.where(plan.recompute == 0, 1.0, 0.0)
    attn = attn + keep * 5.0 * a / tp * d.tokens * model.seq_len
    n = transformer.ffn_matrices(model)

    def ffn(width, tokens, act_in=BF16, keep_out=keep_in):
        """FC1 output (``act_in`` bytes) and FC2 input (stored width, if kept) of
        ``tokens`` rows."""
        return tokens * width * (act_in * (n - 1.0) + keep_out * w)

    dense_ffn = seq + ffn(model.ffn_hidden / tp, d.tokens)
    copies = layer_costs.expert_tokens(model, plan, d) * model.experts / plan.ep
    # experts under low_precision_storage: SwiGLU input in fp8, its output recomputed
    keep_exp = keep_in * (1.0 - lps)
    # per routed copy: FC1 input and activation input (what offloading moves), FC2 input
    routed = ((1.0 - plan.offload_expert_act) * routed_saved(model, plan, d)
              + copies * keep_exp * w * model.expert_ffn_hidden / plan.etp)
    shared = ffn(model.shared_experts * model.expert_ffn_hidden / tp, d.tokens,
                 act_in=BF16 - lps, keep_out=keep_exp)
    moe_ffn = (BF16 + keep_in * BF16) * h * d.tokens_sp + routed + shared
    return attn + dense_ffn, attn + moe_ffn


def weight_of(flag):
    """1.0 where a 0/1 model flag is set."""
    return jnp.where(flag > 0, 1.0, 0.0)


def activations(model: Model, plan: Plan, d: Dims, load: RankLoad):
    """Activation bytes of one pipeline rank (module docstring): ``in_flight`` micro-batches
    of what one micro-batch leaves on the rank's layers (and the embedding output on the
    first stage), one micro-batch of logits where the rank holds the output layer, and the
    transient buffers."""
    a_dense, a_moe = layer_activations(model, plan, d)
    dense_only = d.structure.moe is False  # no MoE layer to hold (and none built)
    n_dense, n_moe = load.dense * load.per_mb, load.moe * load.per_mb
    per_mb = n_dense * a_dense + (0.0 if dense_only else n_moe * a_moe)
    full_input = BF16 * model.hidden * d.tokens_sp
    working = jnp.maximum(a_dense, 0.0 if dense_only else jnp.where(load.moe > 0, a_moe, 0.0))
    per_mb = jnp.where(plan.recompute >= 2, (n_dense + n_moe) * full_input + 0.0, per_mb)
    extra = jnp.where(plan.recompute >= 2, working, 0.0)
    embed_out = BF16 * model.hidden * d.tokens_sp
    logits = 6.0 * d.tokens * model.vocab / plan.tp
    staged = load.in_flight * (per_mb + load.embedding * embed_out) + load.head * logits
    a2a = 2.0 * BF16 * d.tokens_moe * model.top_k * layer_costs.capacity(model) * model.hidden
    transient = BF16 * d.tokens * model.hidden
    if not dense_only:
        # offloaded expert activations: two layers' worth stay resident (the layer being
        # offloaded or reloaded and the one computing)
        staging = plan.offload_expert_act * 2.0 * routed_saved(model, plan, d)
        transient = transient + d.is_moe * (a2a + staging)
    return staged + extra + transient


def rank_memory(model: Model, system: System, plan: Plan, d: Dims, load: RankLoad) -> Memory:
    """HBM bytes of one pipeline rank."""
    w, g, o = model_state(model, plan, d, load)
    act = activations(model, plan, d, load)
    reserved = system.constants.reserved_bytes + 0.0 * system.gpu.hbm_bytes
    return Memory(w, g, o, act, reserved, w + g + o + act + reserved)


def memory(model: Model, system: System, plan: Plan, d: Dims, lay: Layout,
           structure: Structure | None = None) -> Memory:
    """HBM bytes per GPU on the pipeline rank that needs the most (of the first, a middle
    and the last rank, :class:`~cpo_opt.model.pipeline.Layout`); ``Memory.rank`` says which
    (0, 1, 2: :data:`~cpo_opt.model.pipeline.RANK_NAMES`). ``structure`` (default
    ``d.structure``, the one ``d`` was computed for) decides which blocks are built."""
    if structure is not None:
        d = dataclasses.replace(d, structure=structure)
    best = None
    for i, load in enumerate(lay.ranks()):
        m = rank_memory(model, system, plan, d, load)
        m = dataclasses.replace(m, rank=jnp.asarray(float(i)) + 0.0 * m.total)
        if best is None:
            best = m
        else:
            take = m.total > best.total
            best = Memory(*(jnp.where(take, getattr(m, f.name), getattr(best, f.name))
                            for f in dataclasses.fields(Memory)))
    return best

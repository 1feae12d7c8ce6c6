"""Physical efficiency constants: achievable fractions of peak and fixed overheads.

Each is an achievable fraction of a datasheet peak or a fixed overhead, chosen from published
micro-benchmarks and then checked (not tuned per case) against the calibration set
(``cpo-opt validate``). Changing one changes every prediction.

The calibratable ones travel through the traced model as the :class:`Constants` pytree, a
field of :class:`~cpo_opt.model.config.System` (``system.constants``), so that
``calibrate`` can differentiate the model with respect to them and a constants file can key
them per GPU generation. The module-level names below are the shipped defaults
(:data:`DEFAULTS`); ``GEMM_TILE_DIM``, ``ROOFLINE_P`` and ``ATTN_BWD_FLOP_RATIO`` describe the
kernels' shape and stay fixed.
"""

from __future__ import annotations

import dataclasses

from cpo_opt.model import fitted as _fitted
from cpo_opt.model.config import Array, pytree

# --- tensor-core GEMMs --------------------------------------------------------------------
GEMM_EFF_BF16 = 0.75
"""Largest achievable fraction of the dense bf16 tensor peak for a large GEMM. cuBLAS reaches
about 80-88% of peak on A100 (250-275 of 312 TFLOP/s) and 75-85% on H100 SXM for large
square bf16 problems (NVIDIA cuBLAS/CUTLASS benchmarks, Megatron-LM reports)."""

GEMM_EFF_FP8 = 0.70
"""The same for fp8 GEMMs, which also pay scaling/casting around them (Transformer Engine):
about 65-75% of the fp8 peak on H100 (NVIDIA TE benchmarks, DeepSeek-V3 report sec. 3.3)."""

CLOCK_FRACTION = 1.0
"""Sustained tensor-core clock in long training runs over the clock behind the datasheet peak
(dimensionless, log-parameterised by ``calibrate``). The GEMM and attention fractions above
come from short micro-benchmarks; in hours-long training at the board power limit the clock
settles lower when the tensor cores are busy (A100's HPL peak was quoted at the 1305 MHz it
sustains at 400 W, not its 1410 MHz boost, https://glennklockwood.com/garden/peak-FLOPS; H100's
989 TFLOP/s bf16 peak assumes 1830 MHz under a 700 W cap). It scales every tensor-core rate
(GEMMs in both dtypes and the attention core), not HBM or the fabric. Shipped as 1 (the
dense A100 set is fitted through ``gemm_eff_bf16``); a per-generation value is what
``calibrate`` sets from measured runs of that generation (docs/calibration.md)."""

GEMM_TILE_DIM = 48.0
"""Half-saturation size of one GEMM dimension: each of m, n, k contributes a factor
``d / (d + GEMM_TILE_DIM)``, the smooth stand-in for tile and wave quantization (a 128-wide
tile half-filled by a 64-token expert batch wastes half its work)."""

ROOFLINE_P = 4
"""A GEMM's time is the p-norm of its compute time and its HBM time (a smooth roofline):
``(t_flop^p + t_mem^p)^(1/p)``; p=4 makes a kernel exactly at the ridge point 19% slower
than either bound (GEMMs near the ridge overlap loads and math imperfectly). Fixed at 4 so the
norm needs only square roots (:func:`cpo_opt.model.compute.roofline`)."""

KERNEL_OVERHEAD_S = 4e-6
"""Fixed cost of one kernel launch/tail, seconds (CUDA launch ~2-5 us without graphs)."""

# --- attention core (flash attention) -------------------------------------------------------
ATTN_EFF_FWD = 0.62
"""Achievable fraction of the tensor peak for the flash-attention forward kernel at head
dimension 128 and long sequences (FlashAttention-2: ~70% of A100 peak fwd; FA3 on H100 ~75%
bf16; causal masking and short sequences lower it)."""

ATTN_BWD_FLOP_RATIO = 2.5
"""Backward FLOPs of flash attention over forward FLOPs: the backward recomputes QK^T and runs
4 more GEMMs (5 vs 2), FlashAttention-2 paper, sec. 3.2."""

ATTN_EFF_BWD = 0.55
"""Achievable fraction of peak of the flash-attention backward kernel (FlashAttention-2:
~55-60% on A100 fwd+bwd combined ~ 63%)."""

# --- memory-bound kernels --------------------------------------------------------------------
HBM_EFF = 0.85
"""Achievable fraction of HBM peak bandwidth for streaming kernels (norms, activations,
optimizer update): STREAM-like kernels reach 85-92% on A100/H100."""

# --- fabric ----------------------------------------------------------------------------------
LINK_EFF_SCALE_UP = 0.80
"""Achievable fraction of the per-direction scale-up bandwidth for NCCL collectives (bus
bandwidth): all-reduce busbw ~235 of 300 GB/s on A100 NVLink3, ~360-370 of 450 on H100."""

LINK_EFF_SCALE_OUT = 0.85
"""Achievable fraction of the scale-out NIC bandwidth (IB HDR/NDR busbw ~ 85-92% of line
rate in nccl-tests at large messages)."""

# --- host ------------------------------------------------------------------------------------
HOST_LAUNCH_S = 10e-6
"""Host (CPU) time to issue one kernel from PyTorch eager mode: Python dispatch, the
framework's operator overhead and ``cudaLaunchKernel``, about 5-20 us per operator
(PyTorch dispatcher overhead ~ 5-10 us; NVIDIA's Megatron-Core MoE report, arXiv 2603.07685,
finds GB200 MoE training host/launch bound for fine-grained experts: the GPU finishes small
kernels faster than the CPU issues them). A layer whose kernels take less GPU time than
their issue time runs at the host's pace (:mod:`cpo_opt.model.step`)."""

GRAPH_LAUNCH_FRACTION = 0.1
"""Host issue time left per kernel when a layer's kernels are captured in CUDA graphs
(``plan.cuda_graphs``): one graph launch replaces many kernel launches, and Megatron-Core
captures attention, router and preprocessing, not the dynamic-shape expert GEMMs and
dispatch. A fraction, not a fit: 1 graph launch per ~10 captured kernels."""

HOST_LINK_BW = 50e9
"""Achievable bytes/s per direction between a GPU and its host (optimizer offload): PCIe
Gen5 x16 (64 GB/s line rate) on H100/H800 HGX boards. Blackwell GB200 uses NVLink-C2C,
450 GB/s per direction (``GENERATION_DEFAULTS``); A100 PCIe Gen4 x16, 25 GB/s."""

HOST_SYNC_S = 1.7e-3
"""GPU idle time per dropless MoE layer forward from the host-device synchronisation of its
routing and the host-issued expert part behind it. The host must read the tokens-per-expert
counts before it can size the receive buffers and the grouped GEMMs (Megatron-Core's
all-to-all dispatcher copies the splits to the CPU and synchronises; DeepEP's normal dispatch
busy-waits on the CPU for the received counts; TE's grouped GEMM takes ``m_splits`` as a host
list), so the GPU drains its queue there, and the expert part that follows (dynamic shapes:
outside CUDA graphs) is issued by the host from an empty queue. NVIDIA's DeepSeek-V3 GB200
guide (Megatron-LM docs/discussions/deepseek-v3-gb200-optimization, sec. 3.1) estimates that
removing this sync, which would let CUDA graphs take the whole model and so remove the
remaining CPU overhead, gains "at least 10%" on its final 970 TFLOP/s run (TP1 PP8 VPP4 EP32,
MBS 1, GBS 2048 on 256 GB200). That run's step is 2048 x 4096 tokens x 260.7 GFLOP per token /
(970 TFLOP/s x 256) = 8.80 s, with 64 micro-batches of 8 MoE layers on a pipeline rank:
0.10 x 8.80 s / (64 x 8) = 1.7 ms per MoE layer and micro-batch, a lower bound. That run is
not in any calibration set. It is a property of the software path (PyTorch/TE host work per
MoE layer) more than of the GPU, so one value serves every generation (no Hopper figure is
published). Token-dropping MoE (a capacity factor) has static shapes and no sync."""

COMM_SM_FRACTION = 20.0 / 132.0
"""Fraction of the GPU's SMs that the EP dispatch/combine kernels hold while they run: DeepEP
normal kernels take ``moe_deepep_num_sms = 20`` SMs by default in Megatron-Core, of H100's
132. While an all-to-all is overlapped with another micro-batch's compute (``overlap_ep``),
that compute runs on the remaining SMs (``1 - f``), so the overlapped part of the kernels
stretches by ``f / (1 - f)``. Blackwell (HybridEP, ``moe_hybridep_num_sms = 16`` of B200's
148 SMs) in ``GENERATION_DEFAULTS``."""

# --- memory ----------------------------------------------------------------------------------
RESERVED_BYTES = 3e9
"""HBM not available to the model: CUDA context, NCCL buffers, allocator fragmentation."""


# --- the calibratable set ---------------------------------------------------------------------
@pytree
class Constants:
    """The model's calibratable constants (SI units), one pytree so they can be traced."""

    gemm_eff_bf16: Array
    gemm_eff_fp8: Array
    attn_eff_fwd: Array
    attn_eff_bwd: Array
    hbm_eff: Array
    kernel_overhead_s: Array
    link_eff_scale_up: Array
    link_eff_scale_out: Array
    reserved_bytes: Array
    host_launch_s: Array
    graph_launch_fraction: Array
    host_link_bw: Array
    host_sync_s: Array
    comm_sm_fraction: Array
    clock_fraction: Array


@dataclasses.dataclass(frozen=True)
class Info:
    """What a constant is: its shipped value, unit (``"fraction"``: 0 < value <= 1, else a
    positive quantity in that SI unit) and the module-level name documenting its source."""

    default: float
    unit: str
    doc_name: str


INFO: dict[str, Info] = {
    "gemm_eff_bf16": Info(GEMM_EFF_BF16, "fraction", "GEMM_EFF_BF16"),
    "gemm_eff_fp8": Info(GEMM_EFF_FP8, "fraction", "GEMM_EFF_FP8"),
    "attn_eff_fwd": Info(ATTN_EFF_FWD, "fraction", "ATTN_EFF_FWD"),
    "attn_eff_bwd": Info(ATTN_EFF_BWD, "fraction", "ATTN_EFF_BWD"),
    "hbm_eff": Info(HBM_EFF, "fraction", "HBM_EFF"),
    "kernel_overhead_s": Info(KERNEL_OVERHEAD_S, "s", "KERNEL_OVERHEAD_S"),
    "link_eff_scale_up": Info(LINK_EFF_SCALE_UP, "fraction", "LINK_EFF_SCALE_UP"),
    "link_eff_scale_out": Info(LINK_EFF_SCALE_OUT, "fraction", "LINK_EFF_SCALE_OUT"),
    "reserved_bytes": Info(RESERVED_BYTES, "bytes", "RESERVED_BYTES"),
    "host_launch_s": Info(HOST_LAUNCH_S, "s", "HOST_LAUNCH_S"),
    "graph_launch_fraction": Info(GRAPH_LAUNCH_FRACTION, "fraction", "GRAPH_LAUNCH_FRACTION"),
    "host_link_bw": Info(HOST_LINK_BW, "bytes/s", "HOST_LINK_BW"),
    "host_sync_s": Info(HOST_SYNC_S, "s", "HOST_SYNC_S"),
    "comm_sm_fraction": Info(COMM_SM_FRACTION, "fraction", "COMM_SM_FRACTION"),
    "clock_fraction": Info(CLOCK_FRACTION, "ratio", "CLOCK_FRACTION"),
}
"""Every field of :class:`Constants` with its default and unit, in field order."""

assert tuple(INFO) == tuple(f.name for f in dataclasses.fields(Constants))

DEFAULTS = Constants(**{name: info.default for name, info in INFO.items()})
"""The shipped constants, before any per-generation value."""

GENERATIONS = ("ampere", "hopper", "blackwell", "rubin")
"""GPU generations a constants table may key values by (besides GPU preset names)."""

GENERATION_DEFAULTS: dict[str, dict[str, float]] = {
    "ampere": {"host_link_bw": 25e9},
    "hopper": {"gemm_eff_fp8": 0.64},
    "blackwell": {"host_link_bw": 450e9, "gemm_eff_fp8": 0.55,
                  "comm_sm_fraction": 16.0 / 148.0},
}
"""Shipped per-generation values that differ from :data:`DEFAULTS`, each from a datasheet:

* ampere ``host_link_bw``: PCIe Gen4 x16, 32 GB/s line rate per direction, ~25 achievable.
* blackwell ``host_link_bw``: GB200's NVLink-C2C, 900 GB/s bidirectional = 450 GB/s per
  direction (NVIDIA GB200 NVL72 datasheet; HGX B200 boards use PCIe Gen5 instead: override
  per GPU name in a constants table).
* blackwell ``gemm_eff_fp8``: NVIDIA's MXFP8 grouped GEMM (multi-stream cuBLAS, the one
  Megatron-Core runs) reaches 2,672 TFLOP/s on GB200 at K = 7168, N = 2048 with L2 flushed
  (Megatron-LM docs/discussions/deepseek-v3-gb200-optimization, sec. 1, item 3): 0.534 of the
  5,000 TFLOP/s dense fp8 peak. Divided by the model's shape factor at that shape
  (:func:`cpo_opt.model.compute.shape_factor` ~ 0.965 for M ~ 8k tokens) that is 0.55. The
  0.70 default stays for Hopper's per-tensor fp8.
* hopper ``gemm_eff_fp8``: fine-grained (1x128 activation, 128x128 weight) fp8 scaling, the
  recipe DeepSeek-V3 trained with and Megatron-Core's FP8-blockwise recipe on Hopper, which
  promotes partial sums on CUDA cores (Hopper tensor cores cannot apply block scales).
  DeepGEMM's MoE grouped GEMMs on H800 (README of Feb. 2025, contiguous layout, 4 x 8192
  tokens): 1,297 TFLOP/s for N = 4096, K = 7168 and 1,099 for N = 7168, K = 2048, weighted
  by FLOPs 1,231 of 1,979: 0.62, over the shape factor ~0.97: 0.64. (Per-tensor delayed
  scaling reaches ~0.70, the global default; override per GPU name for such a run.)
* blackwell ``comm_sm_fraction``: HybridEP's 16 SMs (Megatron-Core default
  ``moe_hybridep_num_sms``) of B200/GB200's 148.

The remaining per-generation values (bf16 GEMM and attention fractions, the host constants)
are what ``calibrate`` may set from the fit half of the MoE set (``docs/calibration.md``)."""


def generation_of(gpu_name: str) -> str | None:
    """The generation of a GPU from its name (``"H100-SXM"`` -> ``"hopper"``), or None."""
    n = str(gpu_name).lower()
    for gen, marks in (("ampere", ("a100", "a800", "a30")),
                       ("hopper", ("h100", "h800", "h200", "h20", "gh200")),
                       ("blackwell", ("b200", "gb200", "b300", "gb300", "b100")),
                       ("rubin", ("rubin", "r100", "vr200"))):
        if any(m in n for m in marks):
            return gen
    return None


def constants_for(gpu_name: str, table: dict[str, dict[str, float]] | None = None,
                  fitted: bool = True) -> Constants:
    """The constants for a GPU: defaults, then the shipped per-generation values, then (with
    ``fitted``) the shipped values fitted by ``calibrate`` (:mod:`cpo_opt.model.fitted`), then
    ``table`` (a constants file: ``{"*": {...}, "hopper": {...}, "H100-SXM": {...}}``), each
    later and more specific level overriding the earlier (global < generation < GPU name)."""
    values = {name: info.default for name, info in INFO.items()}
    gen = generation_of(gpu_name)
    values.update(GENERATION_DEFAULTS.get(gen or "", {}))
    if fitted:
        for level in ("*", gen or "", str(gpu_name)):
            values.update(_fitted.VALUES.get(level, {}))
    if table:
        for level in ("*", gen or "", str(gpu_name)):
            values.update(table.get(level, {}))
    return Constants(**values)

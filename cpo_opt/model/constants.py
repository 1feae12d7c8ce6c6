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
GEMM_EFF_BF16 = 0.81
"""Achievable fraction of the dense bf16 tensor peak in the main loop of a GEMM tile (before
tile/wave quantization and the per-tile overhead, :mod:`cpo_opt.model.compute`): 0.81 for
Hopper, fitted to OpenXLA's sm_90 matmul table (``experiments/gemm_shape_fit.py``; its
4096^3 row runs at 783 of 989 TFLOP/s); Blackwell's in :data:`GENERATION_DEFAULTS`; Ampere's
is fitted by ``calibrate`` on the dense A100 runs (``cpo_opt/model/fitted.py``). These are
short benchmarks at the boost clock; long training runs at the power limit sustain less
(``CLOCK_FRACTION``)."""

GEMM_EFF_FP8 = 0.70
"""The same for fp8 GEMMs: 0.70 of the dense fp8 peak, fitted to DeepGEMM's H800 table of
fine-grained (1x128 / 128x128 block-scaled) fp8 GEMMs (README at 55ab91f;
``experiments/gemm_shape_fit.py``), the recipe DeepSeek-V3 trained with and Megatron-Core's
blockwise recipe on Hopper; per-tensor scaled cuBLAS fp8 GEMMs are within a few percent of it.
Blackwell's MXFP8 in :data:`GENERATION_DEFAULTS`. The quantisation kernels around each GEMM
are timed apart (:func:`cpo_opt.model.compute.fp8_cast_time`)."""

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
"""Half-saturation size of one dimension of the flash-attention core (query block, head
dimension): each contributes a factor ``d / (d + GEMM_TILE_DIM)`` to its efficiency
(:func:`cpo_opt.model.compute.attention_core_time`). GEMMs are tiled explicitly
(:func:`cpo_opt.model.compute.tiled_flop_time`)."""

SM_COUNT = 132.0
"""Streaming multiprocessors of the GPU, over which a GEMM's output tiles run in waves
(:mod:`cpo_opt.model.compute`). Default H100 SXM's 132 (NVIDIA H100 Tensor Core GPU
Architecture whitepaper, "H100 SXM5: 132 SMs"); A100 108 (A100 whitepaper), B200/GB200 148
(NVIDIA Blackwell architecture technical brief: 148 SMs per dual-die GPU), B300/GB300 160
(NVIDIA technical blog "Inside NVIDIA Blackwell Ultra", 2025: 160 SMs) in
:data:`GENERATION_DEFAULTS` / :data:`GPU_DEFAULTS`. A count, not a calibration constant."""

GEMM_TILE_OVERHEAD_S = 1.23e-6
"""Fixed seconds of one 128 x 128 GEMM output tile that do not scale with the reduction
length ``k``: the pipeline fill before the first tensor-core instruction and the epilogue
that converts and writes the tile (:mod:`cpo_opt.model.compute`). Fitted, together with the
Hopper/Blackwell bf16 and Hopper fp8 fractions below, to the 40 published GEMM timings of
``cpo_opt/data/gemm-benchmarks.toml`` (OpenXLA's sm_90 and sm_100 matmul tables, DeepGEMM's
H800 table) by ``python experiments/gemm_shape_fit.py``: one value for every GPU and dtype
(median |error| 5% over the 40 rows, docs/moe-physics.md). It is what makes small-``k``
GEMMs slow: the 4096 x 4096 x 256 bf16 GEMM runs at 40% of H100's peak (OpenXLA table),
the 4096 x 32768 x 512 fp8 one at 38% (DeepGEMM)."""

ROOFLINE_P = 4
"""A GEMM's time is the p-norm of its compute time and its HBM time (a smooth roofline):
``(t_flop^p + t_mem^p)^(1/p)``; p=4 makes a kernel exactly at the ridge point 19% slower
than either bound (GEMMs near the ridge overlap loads and math imperfectly). Fixed at 4 so the
norm needs only square roots (:func:`cpo_opt.model.compute.roofline`)."""

KERNEL_OVERHEAD_S = 4e-6
"""Fixed cost of one kernel launch/tail, seconds (CUDA launch ~2-5 us without graphs)."""

SMALL_KERNEL_S = 4e-6
"""GPU seconds of one small (non-GEMM) kernel beyond its HBM traffic: norms, RoPE, residual
adds, activations, the router's score, top-k, histogram and permutation-index kernels, the
dispatcher's permute and sort (:func:`cpo_opt.model.layer_costs.small_kernels`). The shipped
default is the launch/tail time of any kernel, ``KERNEL_OVERHEAD_S``; what these kernels cost
beyond it (uncoalesced gathers and scatters of the permutation, top-k sorts, fp32 softmax
over the experts, kernels the count misses) is not measured anywhere we could find, so the
shipped value is fitted by ``calibrate`` on runs from several fabrics
(``cpo_opt/model/fitted.py``) and reported with its interval: it is the model's residual."""

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

A2A_PEER_S = 0.13e-6
"""Seconds per remote peer of one all-to-all (dispatch or combine): each GPU posts one message
to every peer outside its scale-up domain and the NIC handles them in turn
(:func:`cpo_opt.model.fabric.all_to_all_on`, :func:`~cpo_opt.model.fabric.hierarchical_dispatch`).
DeepEP's low-latency kernels (README at ebfe47e, H800 + CX7 400 Gb/s RDMA, 128 tokens, hidden
7168, top-8) take 329 us to combine at EP 16 and 360 us at EP 256: 31 us for 240 more remote
peers, 0.13 us per peer (dispatch: 173 -> 194 us, 0.09 us per peer), with the bytes per GPU
fixed. NCCL's all-to-all (one send/receive pair per peer) has no published per-peer figure;
the same value is used."""

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

HOST_SYNC_S = 20e-6
"""Seconds the host waits, per dropless MoE layer forward, on the device-to-host copy of the
tokens-per-expert counts once the GPU has computed them: the copy of a few hundred bytes, the
stream synchronisation that wakes the host thread, and the framework's conversion of the
counts to a host list (Megatron-Core's all-to-all dispatcher ``.to("cpu")`` + sync; DeepEP's
normal dispatch busy-waits on the CPU for the received counts; TE's grouped GEMM takes
``m_splits`` as a host list). About 20 us: a synchronised kernel costs ~6 us more than a
back-to-back one (NVIDIA Technical Blog, A. Gray, "Getting Started with CUDA Graphs", 2019:
~9.6 us vs ~3.8 us per short kernel), plus the small copy's own launch and the Python list
conversion (PyTorch eager operator overhead, ~5-10 us each). The larger cost of the sync is
not this wait but what it serialises: the host work issued after it (dispatch, per-expert
GEMMs) cannot run ahead of the GPU work before it (the host chain of
:mod:`cpo_opt.model.step`). Token-dropping MoE (a capacity factor) has static shapes and no
sync."""

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
    sm_count: Array
    gemm_tile_overhead_s: Array
    a2a_peer_s: Array
    small_kernel_s: Array


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
    "sm_count": Info(SM_COUNT, "count", "SM_COUNT"),
    "gemm_tile_overhead_s": Info(GEMM_TILE_OVERHEAD_S, "s", "GEMM_TILE_OVERHEAD_S"),
    "a2a_peer_s": Info(A2A_PEER_S, "s", "A2A_PEER_S"),
    "small_kernel_s": Info(SMALL_KERNEL_S, "s", "SMALL_KERNEL_S"),
}
"""Every field of :class:`Constants` with its default and unit, in field order."""

assert tuple(INFO) == tuple(f.name for f in dataclasses.fields(Constants))

DEFAULTS = Constants(**{name: info.default for name, info in INFO.items()})
"""The shipped constants, before any per-generation value."""

GENERATIONS = ("ampere", "hopper", "blackwell", "rubin")
"""GPU generations a constants table may key values by (besides GPU preset names)."""

GENERATION_DEFAULTS: dict[str, dict[str, float]] = {
    "ampere": {"host_link_bw": 25e9, "sm_count": 108.0, "gemm_eff_bf16": 0.75},
    "hopper": {},
    "blackwell": {"host_link_bw": 450e9, "gemm_eff_bf16": 0.66, "gemm_eff_fp8": 0.59,
                  "comm_sm_fraction": 16.0 / 148.0, "sm_count": 148.0},
    "rubin": {"gemm_eff_bf16": 0.66, "gemm_eff_fp8": 0.59, "comm_sm_fraction": 16.0 / 148.0,
              "sm_count": 148.0},
}
"""Shipped per-generation values that differ from :data:`DEFAULTS`, each from a datasheet:

* ampere ``host_link_bw``: PCIe Gen4 x16, 32 GB/s line rate per direction, ~25 achievable.
* blackwell ``host_link_bw``: GB200's NVLink-C2C, 900 GB/s bidirectional = 450 GB/s per
  direction (NVIDIA GB200 NVL72 datasheet; HGX B200 boards use PCIe Gen5 instead: override
  per GPU name in a constants table).
* blackwell ``gemm_eff_bf16``: fitted with ``GEMM_TILE_OVERHEAD_S`` to OpenXLA's sm_100
  (B200) matmul table (``experiments/gemm_shape_fit.py``; its 4096 x 4096 x 2048 row runs at
  1,270 of 2,250 TFLOP/s).
* blackwell ``gemm_eff_fp8``: NVIDIA's MXFP8 grouped GEMM (multi-stream cuBLAS, the one
  Megatron-Core runs) reaches 2,672 TFLOP/s on GB200 at K = 7168, N = 2048 with L2 flushed
  (Megatron-LM docs/discussions/deepseek-v3-gb200-optimization, sec. 1, item 3): 0.534 of the
  5,000 TFLOP/s dense fp8 peak; the tiled model (:mod:`cpo_opt.model.compute`, 8192 tokens
  per expert) reproduces it with 0.59 (``experiments/gemm_shape_fit.py`` prints the check).
* ampere ``gemm_eff_bf16``: no published table here; the shipped value is fitted by
  ``calibrate`` on the dense A100 runs (``cpo_opt/model/fitted.py``), 0.75 before it.
* ``sm_count``: A100 108, B200/GB200 148 (datasheets, ``SM_COUNT``); B300/GB300 160 by GPU
  name (:data:`GPU_DEFAULTS`).
* rubin: no published SM count or GEMM table; Blackwell's values are assumed.
* blackwell ``comm_sm_fraction``: HybridEP's 16 SMs (Megatron-Core default
  ``moe_hybridep_num_sms``) of B200/GB200's 148.

The remaining per-generation values (bf16 GEMM and attention fractions, the host constants)
are what ``calibrate`` may set from the fit half of the MoE set (``docs/calibration.md``)."""


GPU_DEFAULTS: dict[str, dict[str, float]] = {
    "b300": {"sm_count": 160.0, "comm_sm_fraction": 16.0 / 160.0},
}
"""Shipped values of particular GPUs (matched by a mark in the name, ``"GB300"`` -> ``b300``)
over their generation's: Blackwell Ultra (B300, GB300) has 160 SMs (NVIDIA technical blog
"Inside NVIDIA Blackwell Ultra", 2025), of which HybridEP still takes 16."""


def gpu_defaults(gpu_name: str) -> dict[str, float]:
    """The :data:`GPU_DEFAULTS` entries whose mark the GPU's name contains."""
    n = str(gpu_name).lower()
    out: dict[str, float] = {}
    for mark, values in GPU_DEFAULTS.items():
        if mark in n:
            out.update(values)
    return out


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
    values.update(gpu_defaults(gpu_name))
    if fitted:
        for level in ("*", gen or "", str(gpu_name)):
            values.update(_fitted.VALUES.get(level, {}))
    if table:
        for level in ("*", gen or "", str(gpu_name)):
            values.update(table.get(level, {}))
    return Constants(**values)

"""Time of GPU kernels: GEMMs, the flash-attention core and memory-bound kernels.

GEMM (``m x k`` times ``k x n``, ``g`` independent problems in one kernel or one grouped
call): the output is cut into tiles of ``TM x TN`` that the GPU's ``S`` streaming
multiprocessors process in waves (CUTLASS/cuBLAS tiling; NVIDIA's "Matrix Multiplication
Background" guide, sections "Tile quantization" and "Wave quantization"):

    tiles  = g ceil(m / TM) ceil(n / TN),      waves = ceil(tiles / S)
    t_tile = 2 TM TN k / (P / S) + tau TM TN / 128^2
    t_flop = min over the tile menu of  waves t_tile
    t_mem  = g (e (m k + k n) + o m n) / (HBM_EFF hbm_bandwidth)
    t      = (t_flop^p + t_mem^p)^(1/p) + launches KERNEL_OVERHEAD_S

``P = eta c peak`` is the achievable tensor rate of the whole GPU (``eta`` the dtype's
``gemm_eff_*``, ``c`` the sustained clock fraction ``clock_fraction``), so ``P / S`` is one
SM's. ``tau`` (``gemm_tile_overhead_s``) is the fixed time of one 128 x 128 output tile that
does not shrink with ``k``: filling the operand pipeline before the first MMA and writing the
tile out after the last (the epilogue); it is what makes small-``k`` GEMMs inefficient: the
tile runs at ``k / (k + k_0)`` of its rate, ``k_0 = tau P / (2 128^2 S)`` (about 220 for
bf16 on H100, 370 on B200, twice that in fp8). The tile menu (:data:`GEMM_TILES`) stands
for cuBLAS's heuristic choice: small outputs take smaller tiles, which waste less in tile and
wave quantization. ``e`` input bytes per element (2 bf16, 1 fp8), ``o`` output bytes,
``p = ROOFLINE_P = 4``. ``S`` is ``sm_count`` (per GPU, :mod:`cpo_opt.model.constants`).
Checked against published GEMM tables (OpenXLA's H100 and B200 matmul tables, DeepGEMM's
H800 FP8 table: ``cpo_opt/data/gemm-benchmarks.toml``, ``experiments/gemm_shape_fit.py``,
``tests/test_gemm_shape.py``).

The relaxed model (``temperature > 0``) smooths each ceiling and the menu's minimum
(:func:`tiled_flop_time`).

Backward runs two GEMMs per forward GEMM: the input gradient (``m x n`` by ``n x k``) and the
weight gradient (``k x m`` by ``m x n``), which accumulates into fp32 main gradients
(``o = 8``: read + write 4 bytes) and whose reduction dimension is the tokens ``m``.
"""

from __future__ import annotations

import jax.numpy as jnp

from cpo_opt.model import constants as C
from cpo_opt.model import smooth
from cpo_opt.model.config import Plan, System

GEMM_TILES = ((128.0, 128.0), (64.0, 128.0), (128.0, 64.0))
"""The output tiles ``(TM, TN)`` a GEMM may run with: CUTLASS's and cuBLAS's Hopper and
Blackwell kernels use 128 x 128 tiles (and larger 2-SM tiles) for large problems and 64-row
or 64-column tiles where the output is small (CUTLASS 3.x ``KernelTmaWarpSpecialized*``
tile shapes; NVIDIA Matrix Multiplication Background guide, "Tile quantization"). The tile
overhead is quoted per 128 x 128 tile and scales with the tile's area (its epilogue writes
``TM TN`` outputs)."""

TILE_REF_AREA = 128.0 * 128.0
"""Output elements of the tile at which ``gemm_tile_overhead_s`` is quoted."""


def matmul_peak(system: System, plan: Plan):
    """Achievable tensor throughput in FLOP/s for the plan's dtype (before shape effects)."""
    gpu, k = system.gpu, system.constants
    bf16 = gpu.matmul_flops_bf16 * k.gemm_eff_bf16 * k.clock_fraction
    fp8 = gpu.matmul_flops_fp8 * k.gemm_eff_fp8 * k.clock_fraction
    return jnp.where(plan.fp8 > 0, fp8, bf16)


def input_bytes(plan: Plan):
    """Bytes per GEMM input element: 1 for fp8, 2 for bf16."""
    return jnp.where(plan.fp8 > 0, 1.0, 2.0)


def tiled_flop_time(m, n, k, groups, peak, system: System, temperature: float = 0.0):
    """Seconds of the tensor-core work of ``groups`` GEMMs ``(m x k) @ (k x n)`` at ``peak``
    FLOP/s (the whole GPU's), tiled and scheduled in waves over the SMs (module docstring),
    with the best tile of :data:`GEMM_TILES`.

    Relaxed model (``temperature > 0``): every ceiling is :func:`smooth.ceil` (exact at whole
    counts, rising to the next within ``temperature`` of a count above each) and the menu's
    minimum the smooth minimum: smooth between tile boundaries, converging to the exact model
    as the temperature falls (like the layer split's ceiling, :mod:`cpo_opt.model.dims`)."""
    consts = system.constants
    sms = jnp.maximum(consts.sm_count, 1.0)
    per_sm = sms / peak  # seconds per FLOP on one SM
    best = None
    for tm, tn in GEMM_TILES:
        tiles = groups * smooth.ceil(m / tm, temperature) * smooth.ceil(n / tn, temperature)
        waves = smooth.ceil(tiles / sms, temperature)
        tile = 2.0 * tm * tn * k * per_sm + consts.gemm_tile_overhead_s * (tm * tn / TILE_REF_AREA)
        t = waves * tile
        best = t if best is None else smooth.smin(best, t, temperature)
    return best


def gemm_time(m, n, k, system: System, plan: Plan, out_bytes=2.0, launches=1.0, groups=1.0,
              temperature: float = 0.0):
    """Seconds for ``groups`` GEMMs ``(m x k) @ (k x n)`` on one GPU (module docstring):
    the tiled tensor-core time and the HBM time combined by the smooth roofline, plus
    ``launches`` kernel overheads. Sizes are clamped to at least 1 so that absent blocks,
    which callers weight by 0, stay finite with finite gradients."""
    m, n, k = jnp.maximum(m, 1.0), jnp.maximum(n, 1.0), jnp.maximum(k, 1.0)
    t_flop = tiled_flop_time(m, n, k, groups, matmul_peak(system, plan), system, temperature)
    nbytes = groups * (input_bytes(plan) * (m * k + k * n) + out_bytes * m * n)
    t_mem = nbytes * (1.0 / (system.constants.hbm_eff * system.gpu.hbm_bandwidth))
    return roofline(t_flop, t_mem) + launches * system.constants.kernel_overhead_s


def roofline(t_flop, t_mem):
    """Smooth roofline ``(t_flop^4 + t_mem^4)^(1/4)`` (``ROOFLINE_P = 4``), computed as
    ``t_max (1 + r^4)^(1/4)`` with ``r = t_min / t_max`` (in range, one division)."""
    tmax = jnp.maximum(t_flop, t_mem)
    r = jnp.minimum(t_flop, t_mem) / tmax
    r2 = r * r
    return tmax * jnp.sqrt(jnp.sqrt(1.0 + r2 * r2))


def gemm_fwd_bwd_time(m, n, k, system: System, plan: Plan, launches=1.0, groups=1.0,
                      temperature: float = 0.0):
    """Forward and backward seconds of ``groups`` linear layers, each applied to ``m``
    tokens (a grouped GEMM over experts: ``groups`` problems of ``m`` tokens each).

    Returns ``(t_fwd, t_bwd)`` with ``t_bwd`` = input-gradient GEMM + weight-gradient GEMM;
    ``launches`` kernel overheads per GEMM (see :func:`gemm_time`).
    """
    kw = dict(launches=launches, groups=groups, temperature=temperature)
    fwd = gemm_time(m, n, k, system, plan, **kw)
    dgrad = gemm_time(m, k, n, system, plan, **kw)
    # the weight gradient accumulates into the main gradient: read + write 4 bytes (fp32) or
    # 2 (bf16 main gradients)
    wgrad = gemm_time(k, n, m, system, plan, out_bytes=8.0 - 4.0 * plan.bf16_main_grads, **kw)
    return fwd, dgrad + wgrad


FP8_CAST_BYTES_PER_ELEMENT = 4.0
"""HBM bytes per element of one fp8 quantisation kernel: read 2 (bf16), write 1 row-wise and
1 column-wise (transposed) fp8 copy, as Transformer Engine's fused cast-transpose does for
each linear layer's input (forward) and output gradient (backward); per-tensor delayed,
blockwise and MXFP8 scaling alike (the scale/amax traffic is ~1% of it)."""

CURRENT_SCALING_EXTRA_KERNELS = 2.0
"""Kernels per quantisation that per-tensor current scaling (``fp8_recipe = "tensorwise"``)
adds to the cast: Transformer Engine's ``Float8CurrentScalingQuantizer::quantize_impl``
(NVIDIA/TransformerEngine ``transformer_engine/pytorch/csrc/quantizer.cpp``) runs
``nvte_compute_amax`` over the input, ``nvte_compute_scale_from_amax``, then the cast
(``nvte_quantize_v2``): three kernels where delayed, blockwise and MXFP8 scaling run one (the
scale comes from the history, or per block inside the cast)."""

CURRENT_SCALING_EXTRA_BYTES = 2.0
"""HBM bytes per element the amax kernel of per-tensor current scaling reads before the cast
(the bf16 input once more): 6 bytes per element in all instead of 4."""


def current_scaling(plan: Plan):
    """1.0 where the plan's fp8 recipe is per-tensor current scaling (``tensorwise``)."""
    return jnp.where(jnp.abs(plan.fp8_recipe - 1.0) < 0.5, 1.0, 0.0)


def fp8_cast_kernels(plan: Plan):
    """Kernels of one fp8 quantisation: 1, or 3 under per-tensor current scaling."""
    return 1.0 + CURRENT_SCALING_EXTRA_KERNELS * current_scaling(plan)


def fp8_cast_time(m, n, k, system: System, plan: Plan, launches=1.0):
    """``(forward, backward)`` seconds of the fp8 quantisation kernels around one linear
    layer of ``m`` tokens (``k`` in, ``n`` out) in fp8 plans, 0 in bf16: the input
    ``m x k`` before the forward GEMM, the output gradient ``m x n`` before the two backward
    GEMMs, :data:`FP8_CAST_BYTES_PER_ELEMENT` per element (plus the amax read of per-tensor
    current scaling), ``launches`` times :func:`fp8_cast_kernels` kernel overheads. Weights
    are quantised once per step, not per micro-batch (not counted)."""
    fp8 = jnp.where(plan.fp8 > 0, 1.0, 0.0)
    cur = current_scaling(plan)
    ovh = launches * fp8_cast_kernels(plan) * system.constants.kernel_overhead_s
    per = FP8_CAST_BYTES_PER_ELEMENT + CURRENT_SCALING_EXTRA_BYTES * cur
    fwd = memory_time(per * m * k, system)
    bwd = memory_time(per * m * n, system)
    return fp8 * (fwd + ovh), fp8 * (bwd + ovh)


ATTN_REF_HEAD_DIM = 128.0
"""Head dimension at which ``ATTN_EFF_FWD`` / ``ATTN_EFF_BWD`` are quoted."""


def attention_core_time(flops_fwd, q_tokens, head_dim, system: System):
    """Forward and backward seconds of the flash-attention core.

    ``t_fwd = F / (ATTN_EFF_FWD c peak_bf16 f(q_tokens) f(head_dim) / f(128))`` and
    ``t_bwd = ATTN_BWD_FLOP_RATIO F / (ATTN_EFF_BWD ...)``, ``c`` the sustained clock
    fraction: the attention core runs in bf16 (fp8 attention is not assumed) and its
    efficiency falls for short query blocks and small heads like a GEMM's. ``ATTN_EFF_*`` are
    quoted at head dimension 128 (FlashAttention-2/3 benchmarks), so the head-dimension fill is
    taken relative to 128: a 128-wide head runs at ``ATTN_EFF_*``, a 64-wide one at 0.79 of it,
    a 192-wide (MLA) one at 1.10 of it.
    """
    d0 = C.GEMM_TILE_DIM
    ref = ATTN_REF_HEAD_DIM / (ATTN_REF_HEAD_DIM + d0)
    fill = (q_tokens / (q_tokens + d0)) * (head_dim / (head_dim + d0)) / ref
    k = system.constants
    peak = system.gpu.matmul_flops_bf16 * k.clock_fraction * fill
    fwd = flops_fwd / (k.attn_eff_fwd * peak) + k.kernel_overhead_s
    bwd = C.ATTN_BWD_FLOP_RATIO * flops_fwd / (k.attn_eff_bwd * peak) + k.kernel_overhead_s
    return fwd, bwd


def memory_time(nbytes, system: System):
    """Seconds to stream ``nbytes`` through HBM (memory-bound kernels)."""
    return nbytes * (1.0 / (system.constants.hbm_eff * system.gpu.hbm_bandwidth))

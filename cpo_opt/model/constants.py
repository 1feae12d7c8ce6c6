"""Physical efficiency constants: one set, the same for every case, GPU and fabric.

Each is an achievable fraction of a datasheet peak or a fixed overhead, chosen from published
micro-benchmarks and then checked (not tuned per case) against the calibration set
(``cpo-opt validate``). Changing one changes every prediction.
"""

# --- tensor-core GEMMs --------------------------------------------------------------------
GEMM_EFF_BF16 = 0.75
"""Largest achievable fraction of the dense bf16 tensor peak for a large GEMM. cuBLAS reaches
about 80-88% of peak on A100 (250-275 of 312 TFLOP/s) and 75-85% on H100 SXM for large
square bf16 problems (NVIDIA cuBLAS/CUTLASS benchmarks, Megatron-LM reports)."""

GEMM_EFF_FP8 = 0.70
"""The same for fp8 GEMMs, which also pay scaling/casting around them (Transformer Engine):
about 65-75% of the fp8 peak on H100 (NVIDIA TE benchmarks, DeepSeek-V3 report sec. 3.3)."""

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

# --- memory ----------------------------------------------------------------------------------
RESERVED_BYTES = 3e9
"""HBM not available to the model: CUDA context, NCCL buffers, allocator fragmentation."""

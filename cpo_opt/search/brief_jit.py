"""``jax.jit`` for programs compiled once and run briefly: descents, sensitivities, fits.

A gradient search's descent (Adam over the relaxed model, a few dozen steps for a few
starts), a sensitivity (one forward and two reverse passes) and a calibration fit run for
milliseconds once compiled, but compiling them is the slowest thing a first ``optimize``,
``sensitivity`` or ``calibrate`` does: on CPU, XLA's fusion emitters turn their large
reverse-mode graphs into very large fused kernels. Compiled without those emitters
(``xla_cpu_use_fusion_emitters = false``, XLA's compile option, jaxlib 0.10.2) the same
programs compile in about half the time and memory. Measured on the 2-core CPU VM, cold:
the descent of Mixtral-8x22B on ``dgx-h100`` (8 starts x 40 steps, float64) 133-149 s and
8.8-9.2 GB peak RSS with XLA's defaults, 62-77 s and 4.6 GB without the emitters; the tiny
study 368 s and 11.3 GB, 276 s and 6.1 GB (docs/speed.md, "Compiling the gradient
programs").

The arithmetic is the same, the kernels differ, so results agree to rounding, not always
to the bit. That Mixtral descent's final objectives (8 starts) agree with XLA's defaults'
to 3e-5 relative for seed 0 and 7e-11 for seed 1 (``experiments/compile_gradient.py``),
and a short multi-start descent can turn a last-bit difference into another local optimum:
in the tiny study's paper figure the two settings ended their descents near different
plans of the Passage bars (before the polish was fixed to reach the better one from either,
docs/speed.md). The exact re-scoring and polish and, where a study runs it, the exhaustive
search decide a reported optimum.

The exact scorers keep XLA's defaults: the same option made ``cpo-opt bench``'s program
about 2x slower per call (3.9 against 1.9 ms for 16k Megatron-1T plans), and an exhaustive
search runs its scorer millions of times. Other backends keep their defaults (the option
is the CPU compiler's). Where the installed XLA does not know the option, the defaults are
used (checked once per backend with a one-line program).
"""

from __future__ import annotations

import functools

import jax

OPTIONS = {"cpu": {"xla_cpu_use_fusion_emitters": False}}
"""XLA compile options of brief programs, per backend (``jax.default_backend()``)."""

_ACCEPTED: dict[str, bool] = {}


def options(backend: str) -> dict | None:
    """:data:`OPTIONS` of ``backend`` when its compiler accepts them, else ``None``."""
    opts = OPTIONS.get(backend)
    if not opts:
        return None
    if backend not in _ACCEPTED:
        try:
            jax.jit(lambda x: x + 1, compiler_options=opts).lower(1.0).compile()
            _ACCEPTED[backend] = True
        except Exception:  # an XLA without the option: "no such compile option"
            _ACCEPTED[backend] = False
    return opts if _ACCEPTED[backend] else None


def brief_jit(fun=None, *, static_argnames=()):
    """``jax.jit(fun, static_argnames=...)`` compiled with :func:`options` of the backend
    in use at the first call (decided at call time, not import time, so that
    ``jax.distributed`` and platform flags are set first). Usable as a decorator, with or
    without ``static_argnames``."""
    if fun is None:
        return functools.partial(brief_jit, static_argnames=static_argnames)
    jitted: dict[str, object] = {}

    @functools.wraps(fun)
    def call(*args, **kwargs):
        backend = jax.default_backend()
        f = jitted.get(backend)
        if f is None:
            f = jitted[backend] = jax.jit(fun, static_argnames=static_argnames,
                                          compiler_options=options(backend))
        return f(*args, **kwargs)

    return call

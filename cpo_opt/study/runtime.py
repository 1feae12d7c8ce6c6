"""The JAX settings every study entry point uses: float64 and the persistent compile cache.

``setup()`` does what ``cpo-opt`` does before any command except ``bench``: enable
``jax_enable_x64`` (the searches and sensitivities run in float64) and keep compiled XLA
executables in ``CPO_OPT_CACHE_DIR`` (default ``~/.cache/cpo-opt/jax``), so scripts, notebooks
and the CLI share one cache. Call it before the first JAX computation.
"""

from __future__ import annotations


def setup() -> None:
    """Enable float64 and the persistent compilation cache (idempotent)."""
    import jax

    from cpo_opt.cli import enable_compile_cache
    jax.config.update("jax_enable_x64", True)
    enable_compile_cache()

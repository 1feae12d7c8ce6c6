"""JAX settings for entry points: float64 and the persistent compile cache.

Library code never flips global JAX flags; the command line, the study scripts, the notebooks
and the tests call :func:`setup` (or :func:`enable_compile_cache`) before the first JAX
computation. ``setup()`` does what ``cpo-opt`` does before any command except ``bench``:
enable ``jax_enable_x64`` (searches and sensitivities run in float64) and keep compiled XLA
executables in ``CPO_OPT_CACHE_DIR`` (default ``~/.cache/cpo-opt/jax``), so scripts, notebooks
and the CLI share one cache.
"""

from __future__ import annotations

import os


def enable_compile_cache() -> None:
    """Keep compiled XLA executables between runs (``CPO_OPT_CACHE_DIR``; empty disables).

    The default is ``$XDG_CACHE_HOME/cpo-opt/jax`` (``~/.cache/cpo-opt/jax``). Models and
    systems are arguments of the compiled functions, not constants, so one cache entry serves
    every model and system: only the first run on a machine pays the compilation.
    """
    import jax
    path = os.environ.get("CPO_OPT_CACHE_DIR")
    if path == "":
        return
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "cpo-opt", "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def setup(x64: bool = True) -> None:
    """Set float64 on or off and enable the persistent compilation cache (idempotent)."""
    import jax

    jax.config.update("jax_enable_x64", bool(x64))
    enable_compile_cache()

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
import stat


def compile_cache_dir() -> str | None:
    """The persistent compilation cache folder, None when off: ``CPO_OPT_CACHE_DIR`` (empty
    turns the cache off), else ``$XDG_CACHE_HOME/cpo-opt/jax`` (``~/.cache/cpo-opt/jax``).
    Decided here once for the command line, the tests and the notebooks."""
    path = os.environ.get("CPO_OPT_CACHE_DIR")
    if path == "":
        return None
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "cpo-opt", "jax")
    return path


def enable_compile_cache(notes: list[str] | None = None) -> None:
    """Keep compiled XLA executables between runs (``CPO_OPT_CACHE_DIR``; empty disables).

    The default is ``$XDG_CACHE_HOME/cpo-opt/jax`` (``~/.cache/cpo-opt/jax``). Models and
    systems are arguments of the compiled functions, not constants, so one cache entry serves
    every model and system: only the first run on a machine pays the compilation. A cache
    that cannot be used is said in one line: appended to ``notes`` when given (the command
    line prints it after its answer or its error line), else on standard error at once.
    """
    import jax
    path = compile_cache_dir()
    if path is None:
        return
    if not private_directory(path, notes):
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def private_directory(path: str, notes: list[str] | None = None) -> bool:
    """Create ``path`` with mode 0700 (or tighten it to 0700 when it is ours); True when it is
    safe to load compiled executables from it.

    XLA executables in the cache are loaded and run, so a cache directory that another user
    can write is refused (the cache is then off for this run, with one line on stderr): not
    owned by us, a symbolic link, or group/other-writable and not ours to fix.
    """
    import sys
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(f"{path} is not a directory owned by this user")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)
        return True
    except OSError as exc:
        message = f"cpo-opt: compile cache off: {exc}"
        if notes is None:
            print(message, file=sys.stderr)
        else:
            notes.append(message)
        return False


def setup(x64: bool = True) -> None:
    """Set float64 on or off and enable the persistent compilation cache (idempotent)."""
    import jax

    jax.config.update("jax_enable_x64", bool(x64))
    enable_compile_cache()

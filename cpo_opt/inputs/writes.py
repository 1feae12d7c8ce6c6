"""Output files written so that no run loses data (``calibrate --out``, ``reproduce --out``).

Every write of every command goes through here, in two steps:

1. :func:`check_file` (or the study's folder check, :mod:`cpo_opt.study.outputs`) *before the
   work starts*: the format follows the extension or the path is refused; a symbolic link, a
   directory, a device or a FIFO is refused (nothing is ever written through a link); a file
   that this command did not write is refused (the caller says how to recognise its own
   output, e.g. a constants file with ``written_by = "cpo-opt calibrate"``); the nearest
   existing folder must be one we can write into. Each refusal is an
   :class:`~cpo_opt.inputs.ArgumentError` naming the flag (exit 2, one line), before any
   compilation.
2. :func:`write_file` *after the work*: the text goes into a fresh file beside the target
   (``tempfile.mkstemp``: created exclusively, so no link can be planted in its place), is
   flushed to disk, the target is checked again, and the fresh file is renamed over it
   (``os.replace``: atomic, and a rename replaces a link itself rather than writing through
   it). An exception at any moment, Ctrl-C (``KeyboardInterrupt``) or SIGTERM (the command
   line turns it into :class:`Interrupted`) included, removes the fresh file and leaves the
   earlier file exactly as it was.

:func:`signals_deferred` holds SIGINT and SIGTERM back over a sequence of renames that must
not be cut in the middle (the study swaps a whole folder in two renames).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import signal
import stat
import tempfile
import threading
from typing import Callable, Iterator, Sequence

from cpo_opt.inputs.sources import ArgumentError

MARKER_BYTES = 65536
"""How much of an existing target is read to tell whether this command wrote it."""


class Interrupted(BaseException):
    """SIGTERM, raised in the main thread by the command line's handler so that every
    ``finally``/``except BaseException`` cleans up (as Ctrl-C's ``KeyboardInterrupt`` does)."""

    def __init__(self, signum: int = signal.SIGTERM):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


RECEIVED: list[int] = []
"""Signals the command line's handlers raised (SIGTERM as :class:`Interrupted`, SIGINT as
``KeyboardInterrupt``). An exception
raised while Python runs a garbage-collection callback (JAX registers one) is printed and
dropped, so the handler also records the signal here and :func:`check_interrupted` raises
it again before any rename and when the command returns."""


def check_interrupted() -> None:
    """Raise :class:`Interrupted` (SIGTERM) or ``KeyboardInterrupt`` (SIGINT) if the command
    line's handler received one (:data:`RECEIVED`)."""
    if RECEIVED:
        if RECEIVED[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(RECEIVED[0])


@dataclasses.dataclass(frozen=True)
class Target:
    """A checked output file: its path, its format (the extension without the dot), and
    whether it holds an earlier output of the same command (then it is replaced, and the
    command says so)."""

    path: pathlib.Path
    format: str
    replaces: bool
    flag: str
    owner: str
    ours: Callable[[bytes], bool] = dataclasses.field(repr=False, compare=False,
                                                      default=lambda head: False)


def _show(path: str) -> str:
    return path if len(path) <= 120 else path[:100] + f"... ({len(path)} characters)"


def _refuse(flag: str, path: str, why: str) -> ArgumentError:
    return ArgumentError(flag.lstrip("-").replace("-", "_"), f"{_show(path)}: {why}")


def _lstat(path: pathlib.Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def writable_folder(flag: str, shown: str, path: pathlib.Path) -> None:
    """The nearest existing ancestor of ``path`` must be a folder we can create entries in
    (the missing folders below it are created at write time). Tested by creating and
    removing a private temporary folder there: permission bits do not tell (``/proc`` looks
    writable to root and is not)."""
    parent = path.parent
    try:
        while True:
            st = _lstat(parent)
            if st is not None:
                break
            if parent.parent == parent:
                raise _refuse(flag, shown, "no existing folder above it")
            parent = parent.parent
        if stat.S_ISLNK(st.st_mode):
            st = os.stat(parent)  # a linked folder above the target is the user's layout
    except OSError as exc:
        raise _refuse(flag, shown, f"unusable path: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(flag, shown, f"{_show(str(parent))} is not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".cpo-opt-probe-", dir=parent)
    except OSError as exc:
        raise _refuse(flag, shown, f"cannot write into {_show(str(parent))}: "
                      f"{exc.strerror or exc}") from None
    os.rmdir(probe)


def check_file(path, *, flag: str, formats: Sequence[str], owner: str,
               ours: Callable[[bytes], bool]) -> Target:
    """Check an output file before the work that produces it (module docstring, step 1).

    Args:
      path: the path as the user gave it.
      flag: the flag named in messages (``"--out"``).
      formats: accepted extensions without the dot (``("toml", "json")``); the file's format
        follows its extension.
      owner: what writes this file, for messages (``"cpo-opt calibrate"``).
      ours: ``ours(first bytes)`` is True when an existing file is an earlier output of the
        same command (then it may be replaced).
    """
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text.strip():
        raise ArgumentError(flag.lstrip("-").replace("-", "_"),
                            "empty path; give a file name ending in "
                            + " or ".join(f".{f}" for f in formats))
    p = pathlib.Path(text)
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in formats:
        raise _refuse(flag, text, "the format follows the extension: give a name ending in "
                      + " or ".join(f".{f}" for f in formats))
    try:
        st = _lstat(p)
        if st is None:
            writable_folder(flag, text, p)
            return Target(p, fmt, False, flag, owner, ours)
    except OSError as exc:
        if isinstance(exc, ArgumentError):
            raise
        raise _refuse(flag, text, f"unusable path: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(flag, text, "is a symbolic link; cpo-opt never writes through a link "
                      "(give the real path or a new name)")
    if stat.S_ISDIR(st.st_mode):
        raise _refuse(flag, text, "is a folder; give a file name ending in "
                      + " or ".join(f".{f}" for f in formats))
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(flag, text, "is not a regular file (a device, a FIFO or a socket)")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            head = f.read(MARKER_BYTES)
    except OSError as exc:
        raise _refuse(flag, text, f"exists and cannot be read: {exc.strerror or exc}") from None
    if not ours(head):
        raise _refuse(flag, text, f"exists and was not written by {owner}; cpo-opt replaces "
                      "only its own earlier output (remove it or give a new name)")
    writable_folder(flag, text, p)
    return Target(p, fmt, True, flag, owner, ours)


def write_file(target: Target, text: str, recheck: bool = True) -> pathlib.Path:
    """Write ``text`` to a checked target (module docstring, step 2); returns the path.

    The fresh file gets the mode a plain ``open(..., "w")`` would give (0666 less the umask).
    With ``recheck`` the target is checked again just before the rename: a link, a folder or
    a foreign file put there while the command ran is refused, and nothing is replaced."""
    path = target.path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        check_interrupted()  # a SIGTERM whose exception was dropped: nothing is replaced
        if recheck:  # what is there now must still pass (a link planted meanwhile: refused)
            check_file(path, flag=target.flag, formats=(target.format,), owner=target.owner,
                       ours=target.ours)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: pathlib.Path) -> None:
    """Flush the folder entry of a rename to disk (best effort: not every system allows
    opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends (main thread only; elsewhere a
    no-op): renames that must happen together are not cut in the middle.

    The handlers are swapped for one that only records the signal, and the first signal
    recorded is handed to the previous handler when the block ends (Ctrl-C's
    ``KeyboardInterrupt``, the CLI's :class:`Interrupted`; under the default action the
    signal is sent again). Blocking the signal with ``pthread_sigmask`` would not do: the
    kernel then delivers it to another thread (JAX runs several) and Python raises it in the
    main thread all the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum, frame):
        pending.append(signum)
    held = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, hold) for s in held}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if pending:
            s = pending[0]
            handler = old[s]
            if callable(handler):
                handler(s, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), s)

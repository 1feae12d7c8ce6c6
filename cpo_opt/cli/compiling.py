"""What a user sees while XLA compiles: one line saying so, never XLA's own log banners.

Two context managers wrap every command (:func:`watch`):

* :func:`xla_log_to_debug`: XLA writes its log lines (``E1204 21:50:01.2 123
  slow_operation_alarm.cc:140] ... Very slow compile? If you want to file a bug ...``,
  ``Constant folding an instruction is taking > 1s``) to file descriptor 2 from C++. While a
  command runs, descriptor 2 is a pipe: lines in XLA's log format (and the banner lines that
  follow them) go to the ``cpo_opt.xla`` logger at debug level (``CPO_OPT_DEBUG=1`` shows
  them); every other line passes through unchanged. Python's own ``sys.stderr`` (progress,
  warnings, the error line) writes to the terminal directly.
* :func:`compile_notice`: JAX's monitoring events mark a compilation request
  (``/jax/compilation_cache/compile_requests_use_cache``) and its end
  (``/jax/core/compile/backend_compile_duration``). A request still compiling after
  :data:`NOTICE_AFTER_S` (a persistent-cache miss: the first run on this machine) prints one
  line on a terminal: that it is compiling, where the result is kept, and how long this
  command's last cold run compiled (kept in ``compile-times.json`` beside the cache).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time

from cpo_opt import runtime

NOTICE_AFTER_S = 2.0
"""A compilation still running after this long is a cache miss worth a line."""

LOG = logging.getLogger("cpo_opt.xla")

XLA_RECORD = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+\S+:\d+\]")
"""The prefix of an absl/TSL log line (severity, date, time, thread, file:line])."""

XLA_CONTINUATION = ("*", "[Compiling module", "Very slow compile?",
                    "Constant folding an instruction is taking")
"""How the lines of a multi-line XLA log record (the slow-compile banner) start."""

REQUEST = "/jax/compilation_cache/compile_requests_use_cache"
DONE = "/jax/core/compile/backend_compile_duration"


def is_xla_line(line: str, in_record: bool) -> bool:
    """True for a line of an XLA log record (see the module docstring)."""
    if XLA_RECORD.match(line):
        return True
    text = line.strip()
    return in_record and (not text or text.startswith(XLA_CONTINUATION)
                          or "Very slow compile?" in text)


def _pump(read_fd: int, out_fd: int) -> None:
    """Copy lines from the pipe to ``out_fd``, XLA's to the debug log instead."""
    buf, in_record = b"", False
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                in_record = is_xla_line(line, in_record)
                if in_record:
                    LOG.debug("%s", line)
                else:
                    os.write(out_fd, raw + b"\n")
    if buf:
        line = buf.decode("utf-8", "replace")
        if is_xla_line(line, in_record):
            LOG.debug("%s", line)
        else:
            os.write(out_fd, buf)


@contextlib.contextmanager
def xla_log_to_debug():
    """Descriptor 2 through a filter for the body (a no-op when ``sys.stderr`` is not
    descriptor 2, e.g. under a test's capture)."""
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    old = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=old.encoding,
                           errors=old.errors)
    pump = threading.Thread(target=_pump, args=(read_fd, saved), daemon=True,
                            name="cpo-opt-xla-log")
    pump.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        finally:
            mine, sys.stderr = sys.stderr, old
            mine.close()
            os.dup2(saved, 2)           # the pipe's last writer is gone: the pump ends
            pump.join(timeout=5.0)
            os.close(saved)


def _times_path() -> str | None:
    d = runtime.compile_cache_dir()
    return None if d is None else os.path.join(os.path.dirname(d.rstrip(os.sep)),
                                               "compile-times.json")


def last_compile_s(command: str) -> float | None:
    """Seconds the last cold run of ``command`` spent compiling (None: not recorded)."""
    path = _times_path()
    try:
        with open(path) as f:
            value = json.load(f).get(command)
        return float(value) if value is not None else None
    except (OSError, TypeError, ValueError, AttributeError):
        return None


def record_compile_s(command: str, seconds: float) -> None:
    """Remember how long ``command`` compiled (best effort: never fails a command)."""
    path = _times_path()
    if path is None:
        return
    try:
        data = {}
        if os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
        data[command] = round(float(seconds), 1)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        pass


class _Watcher:
    """Compile requests in flight, the seconds compiled, and the one-time notice."""

    def __init__(self, command: str, stream, enabled: bool):
        self.command, self.stream, self.enabled = command, stream, enabled
        self.pending: float | None = None
        self.compiled_s = 0.0
        self.told = False
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def on_event(self, event: str, **kw) -> None:
        if event == REQUEST:
            with self.lock:
                self.pending = time.monotonic()

    def on_duration(self, event: str, duration: float, **kw) -> None:
        if event == DONE:
            with self.lock:
                if self.pending is not None and duration > NOTICE_AFTER_S / 2:
                    self.compiled_s += duration
                self.pending = None

    def tick(self) -> None:
        while not self.stop.wait(0.25):
            with self.lock:
                late = (self.pending is not None
                        and time.monotonic() - self.pending > NOTICE_AFTER_S)
            if late and not self.told and self.enabled:
                self.told = True
                self.stream.write(notice_text(self.command) + "\n")
                self.stream.flush()


def notice_text(command: str) -> str:
    """The line shown while a first run compiles."""
    last = last_compile_s(command)
    where = runtime.compile_cache_dir()
    kept = (f"kept in {where}, so later runs skip it" if where else
            "not kept: the compile cache is off (CPO_OPT_CACHE_DIR is empty)")
    when = (f"; the last first run of `{command}` here compiled for {last:.0f} s"
            if last else "")
    return f"cpo-opt {command}: compiling for this machine (first run; {kept}){when} ..."


@contextlib.contextmanager
def compile_notice(command: str, enabled: bool | None = None, stream=None):
    """Watch compilations while the body runs (see the module docstring); ``enabled``
    (default: standard error is a terminal) shows the notice."""
    import jax.monitoring as mon
    stream = stream or sys.stderr
    if enabled is None:
        try:
            enabled = stream.isatty()
        except (AttributeError, ValueError):
            enabled = False
    w = _Watcher(command, stream, enabled)
    mon.register_event_listener(w.on_event)
    mon.register_event_duration_secs_listener(w.on_duration)
    ticker = threading.Thread(target=w.tick, daemon=True, name="cpo-opt-compile-notice")
    ticker.start()
    try:
        yield w
    finally:
        w.stop.set()
        ticker.join(timeout=1.0)
        mon.unregister_event_listener(w.on_event)
        mon.unregister_event_duration_listener(w.on_duration)
        if w.compiled_s > NOTICE_AFTER_S:
            record_compile_s(command, w.compiled_s)


@contextlib.contextmanager
def watch(command: str):
    """What every command runs in: XLA's log lines to the debug log, the compile notice."""
    if os.environ.get("CPO_OPT_DEBUG"):
        logging.basicConfig(level=logging.DEBUG)
    with xla_log_to_debug(), compile_notice(command):
        yield

"""Writes that never lose data (issue 25): every output is checked before the work, staged
and renamed into place, never written through a link, never replaces a file its command did
not write, and survives an interrupt at any moment with the earlier result intact.

The write phase is tested by fault injection (an interrupt raised at each of its steps in
turn, in-process) and by real signals on a real ``cpo-opt`` process (SIGTERM and Ctrl-C while
a calibration runs); the folder swap of ``reproduce`` by a signal sent in the middle of it.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

from cpo_opt.inputs import ArgumentError
from cpo_opt.inputs import writes
from cpo_opt.inputs.constants_file import (as_table, check_out, dumps, read_constants,
                                           write_constants, written_by_calibrate)

OURS = dumps(as_table({"about": {"written_by": "cpo-opt calibrate"},
                       "*": {"hbm_eff": 0.8}}))
"""An earlier ``calibrate --out`` file (what ``check_out`` may replace)."""

TABLE = as_table({"ampere": {"gemm_eff_bf16": {"value": 0.7, "low": 0.65, "high": 0.75}}})


def leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- checked first
@pytest.mark.parametrize("setup, rule", [
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.symlink_to(p.parent / "elsewhere.toml"), "symbolic link"),
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.write_text("# my notes\nkeep = 1\n"), "was not written by"),
    (lambda p: p.write_bytes(b"\xff\xfe binary"), "was not written by"),
])
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_out_file_refusals(tmp_path, setup, rule, suffix):
    """Each refusal names --out and the rule, and leaves the path as it was."""
    path = tmp_path / f"x{suffix}"
    setup(path)
    before = os.lstat(path)
    with pytest.raises(ArgumentError) as info:
        check_out(path)
    assert info.value.argument == "out" and rule in str(info.value), str(info.value)
    after = os.lstat(path)
    assert (before.st_mode, before.st_size, before.st_mtime_ns) == \
        (after.st_mode, after.st_size, after.st_mtime_ns)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name, rule", [
    ("x.txt", "follows the extension"), ("x", "follows the extension"), ("", "empty path"),
    (" ", "empty path"), ("f/x.toml", "Not a directory"), ("/proc/x.toml", "cannot write"),
    ("a" * 5000 + ".toml", "unusable path"),
])
def test_out_paths_refused(tmp_path, name, rule):
    (tmp_path / "f").write_text("a file, not a folder")
    path = name if name.startswith("/") or not name.strip() else str(tmp_path / name)
    with pytest.raises(ArgumentError) as info:
        check_out(path)
    assert rule in str(info.value) and len(str(info.value)) < 400, str(info.value)


def test_new_and_own_files_accepted_and_format_follows_the_extension(tmp_path):
    t = check_out(tmp_path / "sub" / "new.json")
    assert not t.replaces and t.format == "json"
    path = write_constants(t, TABLE)
    assert path.read_text().lstrip().startswith("{")
    assert read_constants(path)["ampere"]["gemm_eff_bf16"] == 0.7
    own = tmp_path / "own.toml"
    own.write_text(OURS)
    t = check_out(own)
    assert t.replaces and t.format == "toml"
    write_constants(t, TABLE)
    back = read_constants(own)
    assert back.intervals["ampere"]["gemm_eff_bf16"] == (0.65, 0.75)
    assert written_by_calibrate(own.read_bytes()) is False  # TABLE has no written_by
    assert leftovers(tmp_path) == []


def test_a_link_planted_during_the_run_is_refused_at_write_time(tmp_path):
    """The target is checked again just before the rename: a link (or a foreign file) put
    there while the command ran is refused, and the file it points to is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = check_out(tmp_path / "out.toml")
    (tmp_path / "out.toml").symlink_to(victim)
    with pytest.raises(ArgumentError, match="symbolic link"):
        write_constants(target, TABLE)
    assert victim.read_text() == "precious" and (tmp_path / "out.toml").is_symlink()
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- interrupted writes
STEPS = ("mkstemp", "write", "fsync", "chmod", "recheck", "replace")


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, writes.Interrupted, OSError])
def test_interrupt_at_every_step_of_the_write_keeps_the_earlier_file(tmp_path, monkeypatch,
                                                                    step, interrupt):
    """An interrupt (Ctrl-C, SIGTERM as the CLI raises it, or a failing disk) at each step of
    the write phase in turn: the earlier file is byte for byte intact and no staging file is
    left (the rename is the only step that changes the target, and it is atomic)."""
    path = tmp_path / "fit.toml"
    path.write_text(OURS)
    target = check_out(path)

    def boom(*a, **k):
        raise interrupt()
    real_fdopen = os.fdopen
    if step == "mkstemp":
        monkeypatch.setattr(writes.tempfile, "mkstemp", boom)
    elif step == "write":
        class Breaking:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *a):
                self.f.close()

            def write(self, text):
                self.f.write(text[: len(text) // 2])
                raise interrupt()
        monkeypatch.setattr(writes.os, "fdopen",
                            lambda fd, *a, **k: Breaking(real_fdopen(fd, *a, **k)))
    elif step == "fsync":
        monkeypatch.setattr(writes.os, "fsync", boom)
    elif step == "chmod":
        monkeypatch.setattr(writes.os, "chmod", boom)
    elif step == "recheck":
        monkeypatch.setattr(writes, "check_file", boom)
    elif step == "replace":
        monkeypatch.setattr(writes.os, "replace", boom)
    with pytest.raises(interrupt):
        write_constants(target, TABLE)
    assert path.read_text() == OURS
    assert leftovers(tmp_path) == []


def test_signals_are_held_back_during_the_folder_swap(tmp_path, monkeypatch):
    """``reproduce``'s folder swap is two renames; a SIGINT arriving between them is
    delivered only after both, so the folder always holds a whole result (earlier or new)."""
    from cpo_opt.study import outputs
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Python runs signal handlers in the main thread only, and the deferral "
                    "is the main thread's (writes.signals_deferred); this test is not in it")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("earlier\n")
    real = os.rename
    seen = []

    def rename(a, b):
        real(a, b)
        seen.append(pathlib.Path(b).name)
        if len(seen) == 1:  # the earlier result moved aside: the worst moment to stop
            # to this thread itself, so that it is delivered now (os.kill lets the kernel hand
            # it to any thread of the process; JAX and pytest-xdist run several)
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            time.sleep(0.05)
    monkeypatch.setattr(outputs.os, "rename", rename)
    # Ctrl-C's handler, whatever this process inherited: a process started in the background
    # by a shell without job control (`cmd &`, as a CI runner may) inherits SIGINT ignored,
    # and an ignored signal is rightly dropped by the deferral too (seen here: the test then
    # did not raise)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with outputs.staged(out) as stage:
                (stage / "results.md").write_text("new\n")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == ["result", "out"]  # both renames ran before the interrupt
    assert (out / "results.md").read_text() == "new\n"
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- real signals
CASES = """[[case]]
id = "a"
model = {{ layers = 4, hidden = 1024, heads = 16, ffn_hidden = 4096, vocab = 32000, seq_len = 2048 }}
system = {{ gpu = {{ preset = "A100-SXM-80GB" }}, scale_up = {{ domain_size = 8, bandwidth_GB_s = 300.0 }}, scale_out = {{ bandwidth_GB_s = 25.0 }}, cluster = {{ gpus = 8 }} }}
plan = {{ tp = {tp} }}
measured = {{ step_time_s = {t} }}
"""


def _cases(tmp_path) -> pathlib.Path:
    path = tmp_path / "c.toml"
    path.write_text("\n".join(CASES.format(tp=tp, t=t).replace('"a"', f'"c{tp}"')
                              for tp, t in ((8, 0.05), (4, 0.06), (2, 0.07))))
    return path


def _wait_for_sigterm_handler(pid: int, timeout: float) -> None:
    """Until the process catches SIGTERM (``SigCgt`` in /proc: the CLI's handler is
    installed once ``main`` runs; a signal before that would hit the interpreter's import)."""
    status = pathlib.Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            caught = int(next(ln for ln in status.read_text().splitlines()
                              if ln.startswith("SigCgt:")).split()[1], 16)
        except (OSError, StopIteration):
            raise AssertionError("the process ended before it ran main()") from None
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.05)
    raise AssertionError("the process never installed its SIGTERM handler")


@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_calibrate_keeps_the_earlier_constants_file(tmp_path, sig, code):
    """A real ``cpo-opt calibrate --out`` process stopped by SIGTERM or Ctrl-C (SIGINT) while
    it fits: a non-zero exit (128 + the signal), one line saying so, the earlier constants
    file byte for byte intact, no staging file left."""
    out = tmp_path / "fit.toml"
    out.write_text(OURS)
    env = dict(os.environ, CPO_OPT_CACHE_DIR="", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "cpo_opt", "calibrate", "--cases",
                             str(_cases(tmp_path)), "--steps", "400", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_sigterm_handler(proc.pid, timeout=120)  # main() runs: past the imports
        time.sleep(1.0)  # checking its inputs, compiling or fitting
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert out.read_text() == OURS
    assert leftovers(tmp_path) == []

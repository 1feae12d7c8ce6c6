"""What the terminal shows while XLA compiles (cpo_opt/cli/compiling.py): XLA's own log lines
(the slow-compile banner) go to the debug log and nothing else is lost; a compilation that
misses the persistent cache says so once, with the last cold run's compile time."""

import io
import json
import logging
import pathlib
import subprocess
import sys
import textwrap
import time

import jax
import jax.monitoring

from cpo_opt.cli import compiling

BANNER = ("E1204 21:50:01.123456   40123 slow_operation_alarm.cc:140] \n"
          "********************************\n"
          "[Compiling module jit_score_rows] Very slow compile? If you want to file a bug, run "
          "with envvar XLA_FLAGS=--xla_dump_to=/tmp/foo and attach the results.\n"
          "********************************\n")
"""The banner as XLA writes it (xla/service/slow_operation_alarm.cc via absl logging)."""

CHILD = textwrap.dedent("""
    import logging, os, sys
    from cpo_opt.cli import compiling
    logging.basicConfig(level=logging.DEBUG, stream=open(sys.argv[1], "w"))
    with compiling.xla_log_to_debug():
        os.write(2, sys.argv[2].encode())            # C++ writes to descriptor 2
        os.write(2, b"a line of some other library\\n")
        print("progress from Python", file=sys.stderr)
        os.write(2, b"W1204 21:50:02.5 40123 hlo_constant_folding.cc:99] Constant folding "
                    b"an instruction is taking > 1s:\\n")
    print("after the command", file=sys.stderr)
""")


def test_xla_banner_goes_to_the_debug_log_and_other_lines_pass(tmp_path):
    log = tmp_path / "debug.log"
    r = subprocess.run([sys.executable, "-c", CHILD, str(log), BANNER], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Very slow compile" not in r.stderr and "****" not in r.stderr
    assert "Constant folding" not in r.stderr
    for line in ("a line of some other library", "progress from Python", "after the command"):
        assert line in r.stderr
    debug = log.read_text()
    assert "Very slow compile?" in debug and "slow_operation_alarm.cc" in debug
    assert "Constant folding" in debug


def test_a_long_compilation_is_announced_once_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("CPO_OPT_CACHE_DIR", str(tmp_path / "jax"))
    monkeypatch.setattr(compiling, "NOTICE_AFTER_S", 0.3)
    compiling.record_compile_s("optimize", 42.0)
    out = io.StringIO()
    with compiling.compile_notice("optimize", enabled=True, stream=out) as w:
        jax.monitoring.record_event(compiling.REQUEST)
        time.sleep(0.9)
        jax.monitoring.record_event_duration_secs(compiling.DONE, 0.8)
        jax.monitoring.record_event(compiling.REQUEST)          # a second one: no new line
        time.sleep(0.9)
        jax.monitoring.record_event_duration_secs(compiling.DONE, 0.8)
    text = out.getvalue()
    assert text.count("\n") == 1 and "compiling for this machine" in text
    assert "compiled for 42 s" in text and str(tmp_path / "jax") in text
    assert abs(w.compiled_s - 1.6) < 1e-9
    assert json.loads((tmp_path / "compile-times.json").read_text()) == {"optimize": 1.6}


def test_a_cache_hit_says_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CPO_OPT_CACHE_DIR", str(tmp_path / "jax"))
    out = io.StringIO()
    with compiling.compile_notice("evaluate", enabled=True, stream=out):
        jax.monitoring.record_event(compiling.REQUEST)
        jax.monitoring.record_event_duration_secs(compiling.DONE, 0.01)
        time.sleep(0.6)
    assert out.getvalue() == ""
    assert compiling.last_compile_s("evaluate") is None


def test_the_events_are_jax_s_own():
    """The names the notice listens to are those this JAX records."""
    import jax._src.compiler as compiler
    import jax._src.dispatch as dispatch
    assert compiling.REQUEST in pathlib.Path(compiler.__file__).read_text()
    assert dispatch.BACKEND_COMPILE_EVENT == compiling.DONE

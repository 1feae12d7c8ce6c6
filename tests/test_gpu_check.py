"""experiments/gpu_check.sh (issue 24 item 4), run on the CPU at its small size.

On this machine the default backend *is* the CPU, so the GPU-vs-CPU comparison compares the
CPU with itself: the slow test checks the plumbing (every step runs, every expected figure
line is printed with a number, the comparisons are made and pass, exit status 0), not that a
GPU agrees with the CPU; that needs a GPU lease (docs/speed.md). The fast tests check that the
comparison does fail on a different step time or plan (fed to it in place of the two
processes' JSON), and that a bad SIZE is refused.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "gpu_check.sh"
NUMBER = r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?"

EXPECTED = [rf"backend: cpu x\d+"]
for _model in ("megatron-1t", "deepseek-v3"):
    for _batch in (1024, 4096):
        EXPECTED += [rf"bench {_model} batch {_batch}: {NUMBER} plans/s",
                     rf"bench {_model} batch {_batch} compile: {NUMBER} s"]
EXPECTED += [
    rf"codesign exhaustive warm-up \(grid 2, compile included\): {NUMBER} s",
    r"codesign exhaustive rows: \d+ rows",
    rf"codesign exhaustive: {NUMBER} s",
    rf"codesign exhaustive rate: {NUMBER} rows/s",
    rf"codesign exhaustive step: {NUMBER} s",
    rf"codesign gradient: {NUMBER} s",
    r"codesign gradient rows: \d+ rows",
    rf"codesign gradient step: {NUMBER} s",
    rf"codesign gradient vs exhaustive: {NUMBER} %",
    rf"evaluate megatron-1t step \|default-cpu\|/cpu: {NUMBER} relative",
    rf"evaluate deepseek-v3 step \|default-cpu\|/cpu: {NUMBER} relative",
    rf"optimize megatron-1t step \|default-cpu\|/cpu: {NUMBER} relative",
    r"optimize megatron-1t plan default == cpu: yes",
    rf"total wall: {NUMBER} s",
    r"check: passed",
]


@pytest.mark.slow
def test_small_run_on_cpu_prints_every_figure_and_passes():
    """SMALL=1 on the CPU (3-4 min here, most of it compiling): every figure line, positive
    rates and step times, and the CPU-vs-CPU comparisons exact."""
    env = dict(os.environ, SMALL="1", JAX_PLATFORMS="cpu", PYTHON=sys.executable)
    env.pop("SIZE", None)
    r = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1800)
    lines = r.stdout.splitlines()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for pattern in EXPECTED:
        assert any(re.fullmatch(pattern, ln) for ln in lines), (pattern, r.stdout)
    assert all(re.fullmatch(r"[^:]+: \S+( .*)?", ln) for ln in lines), r.stdout
    got = dict(ln.split(": ", 1) for ln in lines)
    for k in ("codesign exhaustive step", "codesign gradient step",
              "bench deepseek-v3 batch 4096", "codesign exhaustive rate"):
        assert 0 < float(got[k].split()[0]) < float("inf"), (k, got[k])
    for k, v in got.items():
        if k.endswith("|default-cpu|/cpu"):
            assert float(v.split()[0]) == 0.0, (k, v)  # the same backend twice


def _compare_with(monkeypatch, default: dict, cpu_json: dict) -> bool:
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(gpu_check, "run",
                        lambda cmd, cpu=False: json.dumps(cpu_json if cpu else default))
    return gpu_check.compare()


BASE = {"step_time_s": 12.5, "plan": {"tp": 8, "pp": 16}, "hardware": {}}


@pytest.mark.parametrize("other, ok", [
    (dict(BASE), True),
    (dict(BASE, step_time_s=12.5 * (1 + 5e-10)), True),
    (dict(BASE, step_time_s=12.5 * (1 + 2e-9)), False),
    (dict(BASE, plan={"tp": 8, "pp": 8}), False),
    (dict(BASE, hardware={"scale_up.bandwidth_GB_s": 900.0}), False),
])
def test_compare_fails_on_a_different_step_time_or_plan(monkeypatch, capsys, other, ok):
    assert _compare_with(monkeypatch, BASE, other) is ok
    out = capsys.readouterr().out
    assert ("FAILED" in out) is not ok


def test_bad_size_is_refused():
    r = subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_check.py"),
                        "--size", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--size" in r.stderr

"""Tests of cpo_opt.analysis.sensitivity: autodiff gradients of the exact model against finite
differences of ``evaluate``, elasticities, signs, time to train and the ``sensitivity`` CLI.

Float fields are perturbed through the public path (``load_system(..., overrides=...)`` then
``evaluate``); every other field is pinned at its loaded value in the same overrides, so the
finite difference is the same partial derivative that autodiff takes (derived defaults such as
``escape_bandwidth_GB_s = bandwidth_GB_s`` do not follow). Integer fields (``domain_size``,
``switch_radix``, ``max_domain_size``, ``cluster.gpus``) cannot be loaded with a non-integer
value, so they are perturbed on the SI system leaf and run through the same ``evaluate``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import chex
import numpy as np
import pytest

from cpo_opt.inputs import schema
from cpo_opt.cli.main import main
from cpo_opt.analysis.evaluate import SECONDS_PER_DAY, evaluate
from cpo_opt.inputs.loaders import load_model, load_plan, load_system
from cpo_opt.analysis.sensitivity import METHOD, sensitivity

FIELDS = schema.system_fields()
EPS = 1e-4          # relative step of the finite differences
RTOL = 0.02         # autodiff vs central difference
KINK = 0.05         # left vs right one-sided difference beyond this: a kink, field skipped
ZERO = 1e-9         # |elasticity| below this counts as zero
MAX_SKIPPED = 0.20  # share of fields a scenario may skip at kinks

SCENARIOS = {
    "megatron-1t-selene": ("megatron-1t", "dgx-a100-selene", "megatron-1t-3072", 450e9),
    "deepseek-v3-nvl72": ("deepseek-v3", "gb200-nvl72",
                          "tp=1,pp=8,ep=64,micro_batch=1,global_batch=9216,dtype=fp8", 14.8e12),
    "llama3-405b-h100": ("llama3-405b", "dgx-h100", "llama3-405b-16k", 15.6e12),
}


@pytest.fixture(scope="module")
def scenario():
    """``scenario(name)`` -> (model, system, plan, tokens, sensitivity result); cached."""
    cache = {}

    def get(name):
        if name not in cache:
            m_ref, s_ref, p_ref, tokens = SCENARIOS[name]
            m, s = load_model(m_ref), load_system(s_ref)
            p = load_plan(p_ref, m, s)
            cache[name] = (m, s, p, tokens, sensitivity(m, s, p, tokens))
        return cache[name]

    return get


def _is_int(name: str) -> bool:
    section, _, key = name.partition(".")
    return name == "cluster.gpus" or schema.key_named(section, key).kind == "int"


def _pins(system) -> dict[str, str]:
    """Every field present in the loaded system, as ``--set`` strings (exact round trip)."""
    out = {}
    for name in FIELDS:
        section, _, key = name.partition(".")
        if key in system.values[section]:
            out[name] = repr(system.values[section][key])
    return out


def _step_at(model, system, plan, name, value) -> float:
    """``evaluate(...)["step_time_s"]`` with field ``name`` set to ``value`` (file units)."""
    if not _is_int(name):
        perturbed = load_system(system.name, overrides={**_pins(system), name: repr(value)})
    else:
        section, attr, scale = FIELDS[name]
        s = system.system
        if section:
            s = dataclasses.replace(
                s, **{section: dataclasses.replace(getattr(s, section), **{attr: value * scale})})
        else:
            s = dataclasses.replace(s, gpus=value,
                                    scale_out=dataclasses.replace(s.scale_out, domain_size=value))
        perturbed = dataclasses.replace(system, system=s)
    return evaluate(model, perturbed, plan)["step_time_s"]


def _fd_check(model, system, plan, r):
    """(worst relative error, skipped fields, checked fields) of autodiff vs central FD."""
    step = r["step_time_s"]
    assert step == pytest.approx(evaluate(model, system, plan)["step_time_s"], rel=1e-12)
    worst, skipped, checked, failures = 0.0, [], [], []
    for name in FIELDS:
        value, grad = r["values"][name], r["gradients"][name]
        if value == 0.0:  # an absent optional field (no fp8 peak): nothing to perturb
            assert grad == 0.0, name
            continue
        h = value * EPS
        up = _step_at(model, system, plan, name, value + h)
        down = _step_at(model, system, plan, name, value - h)
        right, left, central = (up - step) / h, (step - down) / h, (up - down) / (2 * h)
        tiny = ZERO * step / value
        if abs(grad) < tiny and abs(central) < tiny:
            checked.append(name)
            continue
        if abs(right - left) > KINK * max(abs(right), abs(left)):
            skipped.append(name)
            continue
        err = abs(grad - central) / max(abs(central), tiny)
        worst = max(worst, err)
        checked.append(name)
        if err > RTOL:
            failures.append(f"{name}: autodiff {grad:.6g} vs FD {central:.6g} ({err:.2%})")
    assert not failures, failures
    return worst, skipped, checked


# the MoE (study GPU) scenario in the fast loop; the dense two in the full suite (their
# gradients are also checked in tests/test_gradients.py)
@pytest.mark.parametrize("name", [n if n == "deepseek-v3-nvl72" else
                                  pytest.param(n, marks=pytest.mark.slow) for n in SCENARIOS])
def test_gradients_match_finite_differences_of_evaluate(scenario, name):
    model, system, plan, _, r = scenario(name)
    worst, skipped, checked = _fd_check(model, system, plan, r)
    n = len(skipped) + len(checked)
    assert len(skipped) < MAX_SKIPPED * n, f"kinks at {skipped}"
    # the fields that matter most must have been checked, not skipped
    assert {"gpu.matmul_tflops_bf16", "scale_up.bandwidth_GB_s",
            "scale_out.bandwidth_GB_s"} <= set(checked)
    print(f"{name}: worst rel err {worst:.2e}, skipped {skipped}, checked {len(checked)}")


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_result_covers_every_field_with_consistent_elasticities(scenario, name):
    _, system, _, _, r = scenario(name)
    step = r["step_time_s"]
    for key in ("values", "gradients", "elasticities", "units"):
        assert list(r[key]) == list(FIELDS), key
    chex.assert_tree_all_finite([r["gradients"], r["elasticities"], r["values"]])
    for f in FIELDS:
        assert np.isfinite(r["gradients"][f]), f
        assert r["elasticities"][f] == pytest.approx(
            r["gradients"][f] * r["values"][f] / step, rel=1e-12, abs=1e-300)
    assert sorted(r["ranking"]) == sorted(FIELDS)
    mags = [abs(r["elasticities"][f]) for f in r["ranking"]]
    assert mags == sorted(mags, reverse=True)
    assert r["values"]["scale_up.bandwidth_GB_s"] == system.values["scale_up"]["bandwidth_GB_s"]
    assert r["values"]["cluster.gpus"] == system.values["cluster"]["gpus"]
    assert r["units"]["scale_up.bandwidth_GB_s"] == "s per GB/s"
    assert r["units"]["scale_up.latency_us"] == "s per us"
    assert r["method"] == METHOD and r["dtype"] == "float64"
    assert "dp" in r["plan"] and "global_batch" in r["plan"]
    # cost-side fields the step time does not read: exactly zero
    for f in ("scale_up.switch_radix", "scale_up.escape_bandwidth_GB_s",
              "scale_out.switch_bandwidth_TB_s", "scale_up.energy_pJ_per_bit", "gpu.power_W"):
        assert r["gradients"][f] == 0.0, f


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_signs(scenario, name):
    e = scenario(name)[4]["elasticities"]
    for f in ("scale_up.bandwidth_GB_s", "scale_out.bandwidth_GB_s", "gpu.matmul_tflops_bf16",
              "gpu.hbm_bandwidth_TB_s"):
        assert e[f] <= 0.0, (f, e[f])
    for f in ("scale_up.latency_us", "scale_out.latency_us"):
        assert e[f] >= 0.0, (f, e[f])
    # something real moves the step: compute speed matters in every scenario
    assert e["gpu.matmul_tflops_bf16"] + e["gpu.matmul_tflops_fp8"] < -0.1


def test_fp8_plan_is_sensitive_to_the_fp8_peak(scenario):
    r = scenario("deepseek-v3-nvl72")[4]
    assert r["elasticities"]["gpu.matmul_tflops_fp8"] < -0.05
    a100 = scenario("megatron-1t-selene")[4]
    assert a100["values"]["gpu.matmul_tflops_fp8"] == 0.0
    assert a100["unset"] == ["gpu.matmul_tflops_fp8"]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_time_to_train(scenario, name):
    model, system, plan, tokens, r = scenario(name)
    ttt = r["time_to_train"]
    ev = evaluate(model, system, plan, tokens)
    days = tokens / ev["tokens_per_s"] / SECONDS_PER_DAY
    assert ttt["days"] == pytest.approx(days, rel=1e-12)
    assert ttt["days"] == pytest.approx(ev["time_to_train_days"], rel=1e-12)
    assert ttt["tokens"] == tokens
    assert list(ttt["gradients_days"]) == list(FIELDS)
    ratio = ttt["days"] / r["step_time_s"]
    # fixed global batch: tokens per step do not depend on the hardware, so days move with the
    # step time for every field (cluster.gpus included: dp grows, the batch does not)
    for f in FIELDS:
        assert ttt["gradients_days"][f] == pytest.approx(ratio * r["gradients"][f], rel=1e-9,
                                                         abs=1e-300), f
        assert ttt["elasticities"][f] == pytest.approx(r["elasticities"][f], rel=1e-9,
                                                       abs=1e-300), f


def test_without_tokens_no_time_to_train(scenario):
    model, system, plan, _, _ = scenario("megatron-1t-selene")
    assert "time_to_train" not in sensitivity(model, system, plan)


def test_cli_json(capsys):
    argv = ["sensitivity", "--model", "megatron-1t", "--system", "dgx-a100-selene",
            "--plan", "megatron-1t-3072", "--json"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    r = json.loads(out)  # exactly one JSON object: json.loads rejects trailing text
    assert isinstance(r, dict)
    assert set(r["gradients"]) == set(FIELDS) and set(r["elasticities"]) == set(FIELDS)
    assert r["step_time_s"] > 0


def test_cli_text_table(capsys):
    argv = ["sensitivity", "--model", "megatron-1t", "--system", "dgx-a100-selene",
            "--plan", "megatron-1t-3072", "--tokens", "450B"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "scale_up.bandwidth_GB_s" in out and "days" in out


def _console_script() -> str | None:
    """The installed ``cpo-opt`` script: beside this interpreter, else on PATH."""
    here = pathlib.Path(sys.executable).parent / "cpo-opt"
    return str(here) if here.exists() else shutil.which("cpo-opt")


def test_cli_bad_field_exits_2_with_one_line():
    """The one test of the real processes: ``python -m cpo_opt`` and the ``cpo-opt`` console
    script start, exit 2 on a bad field with one line on stderr, and print JSON on success.
    (Every other CLI test calls ``main(argv)`` in-process.)"""
    cmd = [sys.executable, "-m", "cpo_opt", "sensitivity", "--model", "megatron-1t",
           "--system", "dgx-a100-selene", "--plan", "megatron-1t-3072",
           "--set", "scale_up.bandwdth_GB_s=900", "--json"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(pathlib.Path(__file__).resolve().parents[1])]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "scale_up.bandwdth_GB_s" in lines[0], p.stderr
    script = _console_script()
    if script is None:
        pytest.skip("the cpo-opt console script is not installed (pip install -e .)")
    ok = subprocess.run([script, "presets", "--json"], capture_output=True, text=True,
                        timeout=120, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "megatron-1t" in json.dumps(json.loads(ok.stdout))

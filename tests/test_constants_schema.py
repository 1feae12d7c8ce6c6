"""The constants-file schema (issue 25) and the GPU generations a file covers (issue 22).

A constants file is checked as strictly as a system file: every constant has a unit and a
physical range (``constants_file.RANGES``), interval bounds are finite, inside the range and
ordered, unknown names get a did-you-mean, integers never overflow a float conversion. The
ranges are tested both ways: every value inside gives a finite step time and finite
gradients (the model evaluated and differentiated at both ends of every range), and the
values the fuzz of issue 25 found accepted are refused, naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from cpo_opt.cli.main import main
from cpo_opt.inputs import InputError
from cpo_opt.inputs.constants_file import (RANGES, ConstantsTable, as_table, for_gpu,
                                           read_constants, shipped_table)
from cpo_opt.model import fitted
from cpo_opt.model.constants import DEFAULTS, GENERATION_DEFAULTS, INFO, constants_for

A100 = ("megatron-1t", "dgx-a100-selene", "tp=8,pp=16,global_batch=3072")


@pytest.fixture(autouse=True)
def _no_compile_cache(monkeypatch):
    monkeypatch.setenv("CPO_OPT_CACHE_DIR", "")


# --------------------------------------------------------------------------- the ranges
def test_every_constant_has_a_range_holding_every_shipped_value():
    """The shipped defaults, the per-generation values and the fitted values (with their
    intervals) all lie inside the documented ranges: the ranges never bind a real value."""
    assert set(RANGES) == set(INFO)
    for name, (low, high) in RANGES.items():
        assert 0 < low < high and math.isfinite(high), name
        if INFO[name].unit == "fraction":
            assert high <= 1.0, name
        assert low <= INFO[name].default <= high, name
    for table in (GENERATION_DEFAULTS, fitted.VALUES):
        for level, values in table.items():
            for name, v in values.items():
                assert RANGES[name][0] <= v <= RANGES[name][1], (level, name)
    for level, values in fitted.INTERVALS.items():
        for name, (lo, hi) in values.items():
            assert RANGES[name][0] <= lo <= hi <= RANGES[name][1], (level, name)


@pytest.mark.parametrize("doc", ["docs/constants-shipped.toml", "docs/constants-a100-moefit.toml",
                                 "docs/constants-sync-free.toml"])
def test_the_shipped_constants_files_pass_the_schema(doc):
    assert isinstance(read_constants(doc), ConstantsTable)


def _step(table):
    """Step time and its gradient with respect to every constant (one jit), for the
    megatron-1t A100 plan with the constants of ``table``."""
    import cpo_opt
    from cpo_opt.analysis.evaluate import step_time_jit
    m, s, p = cpo_opt.api.load_inputs(*A100)
    base = constants_for(s.gpu_name, table)

    def f(values):
        system = dataclasses.replace(s.system, constants=type(base)(**values))
        return step_time_jit(m.model, system, p.plan).step_time_s
    values = {n: jax.numpy.asarray(float(getattr(base, n))) for n in INFO}
    t, g = jax.value_and_grad(f)(values)
    return float(t), {n: float(v) for n, v in g.items()}


@pytest.mark.parametrize("end", ["low", "high"])
def test_the_model_is_finite_at_both_ends_of_every_range(end):
    """Every constant at the same end of its range at once, and each alone at either end:
    a finite positive step time and finite gradients (what the ranges promise)."""
    pick = 0 if end == "low" else 1
    tables = [{"*": {n: r[pick] for n, r in RANGES.items()}}]
    tables += [{"*": {n: RANGES[n][pick]}} for n in RANGES]
    for table in tables:
        t, grads = _step(table)
        assert 0 < t < math.inf, table
        assert all(math.isfinite(v) for v in grads.values()), table


# --------------------------------------------------------------------------- refusals
BAD = [
    ('["*"]\ngemm_eff_bf16 = 1e-300\n', "*.gemm_eff_bf16", "between 0.01 and 1"),
    ('["*"]\nhbm_eff = 1e-9\n', "*.hbm_eff", "between 0.01 and 1"),
    ('["*"]\nlink_eff_scale_up = 0.001\n', "*.link_eff_scale_up", "between 0.01 and 1"),
    ('["*"]\nkernel_overhead_s = 1e300\n', "*.kernel_overhead_s", "s, > 0"),
    ('["*"]\nhost_sync_s = 1e300\n', "*.host_sync_s", "physical range"),
    ('["*"]\nhost_launch_s = 1e300\n', "*.host_launch_s", "physical range"),
    ('["*"]\nreserved_bytes = 1e300\n', "*.reserved_bytes", "bytes"),
    ('["*"]\nhost_link_bw = 1e-30\n', "*.host_link_bw", "bytes/s"),
    ('["*"]\nclock_fraction = 5\n', "*.clock_fraction", "between 0.1 and 2"),
    ('["*"]\nclock_fraction = 1e-300\n', "*.clock_fraction", "between 0.1 and 2"),
    ('["*"]\ncomm_sm_fraction = 1.0\n', "*.comm_sm_fraction", "between 0.001 and 0.9"),
    (f'["*"]\ngemm_eff_bf16 = {10**22}\n', "*.gemm_eff_bf16", "physical range"),
    (f'["*"]\nreserved_bytes = {10**400}\n', "*.reserved_bytes", "digits"),
    ('[ampere]\nreserved_bytes = { value = 3e9, low = 1e9, high = inf }\n',
     "ampere.reserved_bytes.high", "finite"),
    ('[ampere]\nreserved_bytes = { value = 3e9, low = 1e9, high = 1e300 }\n',
     "ampere.reserved_bytes.high", "physical range"),
    ('[ampere]\nhbm_eff = { value = 0.8, low = 0.9, high = 0.95 }\n', "ampere.hbm_eff",
     "low <= value <= high"),
    ('["*"]\nhbm_efficiency = 0.8\n', "*.hbm_efficiency", "did you mean 'hbm_eff'"),
    ('[hoper]\nhbm_eff = 0.8\n', "'hoper'", "did you mean 'hopper'"),
    ('["*"]\nhbm_eff = { value = 0.8, hi = 0.9, low = 0.7 }\n', "*.hbm_eff.hi",
     "did you mean 'high'"),
    ('generations = ["hoper"]\n', "generations", "did you mean 'hopper'"),
    ('generations = "hopper"\n', "generations", "a list"),
    ('generations = ["hopper"]\n[ampere]\nhbm_eff = 0.8\n', "ampere", "does not list"),
    ('genrations = ["hopper"]\n', "genrations", "did you mean 'generations'"),
]


@pytest.mark.parametrize("text, key, rule", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_constants_are_refused_naming_file_and_key(tmp_path, text, key, rule):
    path = tmp_path / "k.toml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_constants(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {key}") and rule in msg and "\n" not in msg, msg
    assert len(msg) < 600


@pytest.mark.parametrize("command", [
    ["evaluate", "--model", A100[0], "--system", A100[1], "--plan", A100[2]],
    ["validate"],
    ["sensitivity", "--model", A100[0], "--system", A100[1], "--plan", A100[2]],
    ["optimize", "--model", A100[0], "--system", A100[1]],
    ["reproduce", "--quick", "--no-progress"],
    ["calibrate", "--cases", "cpo_opt/data/moe-fit.toml"],
])
def test_every_command_checks_constants_before_any_work(tmp_path, capsys, monkeypatch, command):
    """Each command that takes --constants refuses an absurd file when it loads it, before
    anything is compiled or searched (evaluate's step function is never called)."""
    from cpo_opt.analysis import evaluate as ev
    monkeypatch.setattr(ev, "step_time_jit", lambda *a, **k: pytest.fail("the model ran"))
    path = tmp_path / "k.toml"
    path.write_text('["*"]\nhost_launch_s = 1e300\n')
    assert main([*command, "--constants", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert str(path) in err and "host_launch_s" in err


@pytest.mark.parametrize("value", ["", " "])
def test_empty_constants_path_names_the_flag(capsys, value):
    assert main(["validate", "--constants", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("--constants:") and "empty" in err


# --------------------------------------------------------------------------- generations
def test_a_file_covers_its_generations():
    hopper = as_table({"generations": ["hopper"], "hopper": {"hbm_eff": 0.8}})
    assert hopper.covers("H100-SXM") and hopper.covers("H800-SXM")
    assert not hopper.covers("A100-SXM-80GB") and not hopper.covers("GB200")
    assert as_table({"*": {"hbm_eff": 0.8}}).covers("anything")  # no key, a "*" level
    inferred = as_table({"ampere": {"hbm_eff": 0.8}, "H100-SXM": {"hbm_eff": 0.7}})
    assert inferred.covered() == ("ampere", "hopper")
    assert inferred.covers("A100-SXM-80GB") and not inferred.covers("B200")
    assert for_gpu(shipped_table(), "MyChip").note is None  # the shipped table is never set aside


def test_another_generation_falls_back_to_the_shipped_constants_with_their_intervals():
    """A Hopper file used on an A100 system: a warning, the shipped constants (the same step
    time as without the file) and the shipped 90% interval (Ampere's fitted GEMM fraction:
    a non-zero width), not a zero-width interval from constants that do not apply."""
    import cpo_opt
    table = {"generations": ["hopper"],
             "hopper": {"hbm_eff": {"value": 0.7, "low": 0.6, "high": 0.8}}}
    plain = cpo_opt.evaluate(*A100).to_dict()
    r = cpo_opt.evaluate(*A100, constants=table).to_dict()
    assert r["step_time_s"] == plain["step_time_s"]
    assert any("covers hopper" in w and "shipped constants" in w for w in r["warnings"])
    low, high = r["step_time_interval_s"]
    assert low < r["step_time_s"] < high
    assert "ampere" in fitted.INTERVALS  # what makes that interval


def test_no_interval_rather_than_a_zero_width_one():
    """Intervals of another generation's constants never give a zero-width interval."""
    import cpo_opt
    r = cpo_opt.evaluate(*A100, constants={
        "*": {"hbm_eff": 0.8}, "hopper": {"hbm_eff": {"value": 0.7, "low": 0.6,
                                                       "high": 0.8}}}).to_dict()
    assert "step_time_interval_s" not in r


def test_validate_warns_per_case_and_cli_keeps_one_json_object(tmp_path, capsys):
    path = tmp_path / "k.toml"
    path.write_text('generations = ["blackwell"]\n[blackwell]\nhbm_eff = 0.8\n')
    assert main(["validate", "--constants", str(path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["warnings"] and all("covers blackwell" in w for w in r["warnings"])
    plain = main(["validate", "--json"])
    assert plain == 0
    p = json.loads(capsys.readouterr().out)
    assert r["mean_abs_error"] == pytest.approx(p["mean_abs_error"], rel=1e-12)


def test_calibrate_refuses_a_fit_level_without_cases(capsys, monkeypatch):
    """``--fit blackwell:NAME`` on A100 cases constrains nothing: exit 2 with the reason,
    before the fit is compiled."""
    from cpo_opt.analysis import calibrate as C
    monkeypatch.setattr(C.Batch, "functions", lambda *a: pytest.fail("the fit ran"))
    assert main(["calibrate", "--cases", "cpo_opt/data/megatron-a100.toml", "--fit",
                 "blackwell:gemm_eff_bf16", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("--fit:") and "blackwell" in err and "constrain nothing" in err
    assert "ampere" in err


def test_calibrated_table_names_its_generations(tmp_path):
    from cpo_opt.inputs.constants_file import dumps, written_by_calibrate
    t = ConstantsTable({"ampere": {"hbm_eff": 0.8}}, {}, "<calibrate>",
                       {"written_by": "cpo-opt calibrate"}, ["ampere"])
    path = tmp_path / "k.toml"
    path.write_text(dumps(t))
    back = read_constants(path)
    assert back.generations == ("ampere",) and written_by_calibrate(path.read_bytes())
    assert DEFAULTS.hbm_eff != 0.8  # the file changes something

"""Tests of cpo_opt.inputs.loaders: every bad input is one InputError line; good inputs load exactly."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pathlib

import jax
import pytest

from cpo_opt.inputs import loaders as inputs
from cpo_opt.inputs import schema
from cpo_opt.inputs import sources
from cpo_opt.inputs.loaders import InputError

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CALIBRATION_PATHS = [_ROOT / "cpo_opt/data/megatron-a100.toml"]  # the shipped copy
CALIBRATION = next((p for p in _CALIBRATION_PATHS if p.exists()), None)

MODEL = {"model": {"name": "tiny", "layers": 8, "hidden": 1024, "heads": 16, "ffn_hidden": 4096,
                   "vocab": 32000, "seq_len": 2048}}
MOE = {"experts": 8, "top_k": 2, "expert_ffn_hidden": 1024}
MLA = {"kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}
SYSTEM = {
    "gpu": {"name": "H100", "matmul_tflops_bf16": 989.0, "matmul_tflops_fp8": 1979.0,
            "hbm_GB": 80.0, "hbm_bandwidth_TB_s": 3.35},
    "scale_up": {"domain_size": 8, "bandwidth_GB_s": 450.0},
    "scale_out": {"bandwidth_GB_s": 50.0},
    "cluster": {"gpus": 64},
}
PLAN = {"plan": {"tp": 2, "pp": 2, "micro_batch": 1, "global_batch": 64}}  # dp = 16
DELETE = object()


# --------------------------------------------------------------------------- helpers
def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_scalar(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def to_toml(doc: dict) -> str:
    """A small TOML writer: top-level scalars, tables, nested tables, [[arrays of tables]]."""
    lines = [f"{k} = {_scalar(v)}" for k, v in doc.items() if not isinstance(v, (dict, list))]

    def table(prefix, tab):
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {_scalar(v)}" for k, v in tab.items() if not isinstance(v, dict))
        for k, v in tab.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}", v)

    for name, value in doc.items():
        if isinstance(value, dict):
            table(name, value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"[[{name}]]")
                lines.extend(f"{k} = {_scalar(v)}" for k, v in item.items())
        elif isinstance(value, list):
            lines.insert(0, f"{name} = {_scalar(value)}")
    return "\n".join(lines) + "\n"


def edited(doc: dict, edits: dict) -> dict:
    """A deep copy of ``doc`` with dotted-path ``edits`` applied (DELETE removes a key)."""
    doc = copy.deepcopy(doc)
    for path, value in edits.items():
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


def write(tmp_path: pathlib.Path, name: str, doc: dict) -> pathlib.Path:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(doc))
    else:
        path.write_text(to_toml(doc))
    return path


def bad(call, *parts: str) -> str:
    """Assert ``call()`` raises one-line InputError containing every part; return the message."""
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def model(edits=None, moe=None, mla=None):
    doc = edited(MODEL, edits or {})
    if moe is not None:
        doc["model"]["moe"] = dict(moe)
    if mla is not None:
        doc["model"]["mla"] = dict(mla)
    return inputs.load_model(doc)


def system(edits=None):
    return inputs.load_system(edited(SYSTEM, edits or {}))


@pytest.fixture
def presets(tmp_path, monkeypatch):
    """A temporary presets directory with one preset of each kind."""
    root = tmp_path / "presets"
    for kind in sources.KINDS:
        (root / kind).mkdir(parents=True)
    about = {"description": "a tiny test model", "sources": ["made up"], "notes": "n"}
    write(root / "models", "tiny.toml", {**MODEL, "about": about})
    write(root / "gpus", "TEST-GPU.toml", {"gpu": SYSTEM["gpu"]})
    sys_doc = edited(SYSTEM, {"gpu": {"preset": "TEST-GPU", "hbm_GB": 141.0}})
    write(root / "systems", "small.toml", {**sys_doc, "about": {"description": "small"}})
    write(root / "plans", "p22.toml", PLAN)
    write(root / "scenarios", "s.toml",
          {"scenario": {"model": "tiny", "system": "small", "plan": "p22", "tokens": 1e9}})
    monkeypatch.setattr(sources, "PRESETS_DIR", root)
    return root


# --------------------------------------------------------------------------- calibration
EXPECTED_GRID = {  # id: (tp, pp, vpp, dp)
    "korthikanti22-22b-full": (8, 1, 1, 1), "korthikanti22-175b-selective": (8, 8, 3, 1),
    "korthikanti22-530b-full": (8, 35, 3, 1), "korthikanti22-1t-selective": (8, 64, 1, 1),
    "narayanan21-1.7b": (1, 1, 1, 32), "narayanan21-3.6b": (2, 1, 1, 32),
    "narayanan21-7.5b": (4, 1, 1, 32), "narayanan21-18.4b": (8, 1, 1, 32),
    "narayanan21-39.1b": (8, 2, 1, 32), "narayanan21-76.1b": (8, 4, 3, 32),
    "narayanan21-145.6b": (8, 8, 2, 24), "narayanan21-310.1b": (8, 16, 2, 15),
    "narayanan21-529.6b": (8, 35, 3, 9), "narayanan21-1008b": (8, 64, 1, 6),
}


@pytest.mark.skipif(CALIBRATION is None, reason="calibration file not found")
def test_calibration_cases_load():
    cases = inputs.load_cases(CALIBRATION)
    assert len(cases) == 18
    by_id = {c.id: c for c in cases}
    assert len(by_id) == 18
    for case_id, (tp, pp, vpp, dp) in EXPECTED_GRID.items():
        v = by_id[case_id].plan.values
        assert (v["tp"], v["pp"], v["vpp"], v["dp"]) == (tp, pp, vpp, dp), case_id
        assert by_id[case_id].plan.plan.tp == float(tp)
    case = by_id["korthikanti22-22b-full"]
    assert case.measured_step_time_s == 1.42
    assert case.system.gpu_name == "A100-SXM-80GB"
    assert case.model.model.experts == 0.0 and case.model.model.dense_layers == 48.0
    assert case.plan.values["recompute"] == "full" and case.plan.plan.recompute == 2.0
    assert case.plan.values["attention"] == "unfused"  # auto on an A100
    assert case.plan.origin.endswith("case[0] 'korthikanti22-22b-full'")


# --------------------------------------------------------------------------- positive
def test_toml_and_json_give_identical_dataclasses(tmp_path):
    doc_m = edited(MODEL, {"model.moe": MOE, "model.mla": MLA})
    m_toml = inputs.load_model(write(tmp_path, "m.toml", doc_m))
    m_json = inputs.load_model(write(tmp_path, "m.json", doc_m))
    s_toml = inputs.load_system(write(tmp_path, "s.toml", SYSTEM))
    s_json = inputs.load_system(write(tmp_path, "s.json", SYSTEM))
    p_toml = inputs.load_plan(write(tmp_path, "p.toml", PLAN), m_toml, s_toml)
    p_json = inputs.load_plan(write(tmp_path, "p.json", PLAN), m_json, s_json)
    assert m_toml.model == m_json.model and m_toml.values == m_json.values
    assert s_toml.system == s_json.system and s_toml.values == s_json.values
    assert p_toml.plan == p_json.plan and p_toml.values == p_json.values


def test_all_leaves_are_python_floats():
    m, s = model(moe=MOE), system()
    p = inputs.load_plan(PLAN, m, s)
    for tree in (m.model, s.system, p.plan):
        leaves = jax.tree_util.tree_leaves(tree)
        assert leaves and all(type(x) is float for x in leaves)


def test_model_defaults_dense_and_no_mla():
    m = model()
    v = m.values["model"]
    assert v["kv_heads"] == 16 and v["head_dim"] == 64
    assert v["gated_ffn"] is True and v["tied_embeddings"] is False
    assert set(m.values) == {"model"}
    assert m.name == "tiny"
    mm = m.model
    assert (mm.kv_heads, mm.head_dim, mm.gated_ffn) == (16.0, 64.0, 1.0)
    assert (mm.experts, mm.top_k, mm.expert_ffn_hidden, mm.shared_experts) == (0.0,) * 4
    assert mm.dense_layers == 8.0 and mm.capacity_factor == 0.0
    assert mm.mla == 0.0 and mm.kv_lora_rank == 0.0 and mm.v_head_dim == 0.0


def test_model_moe_and_mla():
    m = model(moe=MOE, mla=MLA)
    assert m.values["model.moe"] == {**MOE, "shared_experts": 0, "dense_layers": 0,
                                     "capacity_factor": 0.0}
    assert m.values["model.mla"]["q_lora_rank"] == 0
    mm = m.model
    assert (mm.experts, mm.top_k, mm.expert_ffn_hidden, mm.dense_layers) == (8.0, 2.0, 1024.0, 0.0)
    assert (mm.mla, mm.kv_lora_rank, mm.qk_rope_head_dim) == (1.0, 512.0, 64.0)


def test_integral_float_accepted_for_int():
    m = model({"model.layers": 8.0, "model.head_dim": 128})
    assert m.values["model"]["layers"] == 8 and isinstance(m.values["model"]["layers"], int)
    assert m.model.head_dim == 128.0


def test_unit_conversion_and_system_defaults():
    s = system()
    sys_, v = s.system, s.values
    assert sys_.scale_up.bandwidth == 450e9
    assert sys_.scale_out.bandwidth == 50e9
    assert sys_.gpu.matmul_flops_bf16 == 989e12 and sys_.gpu.hbm_bytes == 80e9
    assert sys_.gpu.hbm_bandwidth == pytest.approx(3.35e12)
    assert sys_.scale_up.latency_s == pytest.approx(1e-6)
    assert sys_.scale_out.latency_s == pytest.approx(5e-6)
    assert sys_.scale_up.energy_j_per_bit == pytest.approx(5e-12)
    assert v["gpu"]["vector_tflops"] == pytest.approx(989.0 / 15.0)
    assert isinstance(v["gpu"]["vector_tflops"], float)
    # no radix or reach given: neither caps the domain (defaults to the unlimited reach)
    assert v["scale_up"]["max_domain_size"] == 2**24
    assert v["scale_up"]["switch_radix"] == 2**24 and sys_.scale_up.switch_radix == 2.0**24
    assert v["scale_up"]["switch_bandwidth_TB_s"] == pytest.approx(8 * 450 / 1e3)
    assert v["scale_up"]["escape_bandwidth_GB_s"] == 450.0
    assert v["scale_out"]["switch_radix"] == 64
    assert sys_.scale_out.domain_size == 64.0 and sys_.gpus == 64.0
    assert sys_.scale_up.max_domain_size == float(schema.key_named("scale_up",
                                                                   "max_domain_size").default)
    assert s.gpu_name == "H100"


def test_fp8_peak_absent_is_zero():
    s = system({"gpu.matmul_tflops_fp8": DELETE})
    assert s.system.gpu.matmul_flops_fp8 == 0.0
    assert "matmul_tflops_fp8" not in s.values["gpu"]


def test_overrides_apply_before_defaults(tmp_path):
    path = write(tmp_path, "s.toml", SYSTEM)
    s = inputs.load_system(path, overrides={"scale_up.bandwidth_GB_s": "900",
                                            "cluster.gpus": "4096", "gpu.name": "X",
                                            "scale_up.domain_size": 72})
    assert s.system.scale_up.bandwidth == 900e9
    assert s.values["scale_up"]["escape_bandwidth_GB_s"] == 900.0  # default follows override
    assert s.values["scale_up"]["switch_bandwidth_TB_s"] == pytest.approx(72 * 900 / 1e3)
    assert s.system.gpus == 4096.0 and s.system.scale_out.domain_size == 4096.0
    assert s.gpu_name == "X"


def test_plan_defaults():
    m, s = model(), system()
    p = inputs.load_plan({"tp": 2}, m, s)
    v = p.values
    assert v["sequence_parallel"] is True and v["overlap_p2p"] is False
    assert (v["pp"], v["cp"], v["ep"], v["etp"], v["vpp"], v["micro_batch"]) == (1,) * 6
    assert v["dp"] == 32 and v["recompute"] == "selective" and v["zero"] == 1
    assert v["dtype"] == "bf16" and v["attention"] == "flash"  # auto on an fp8-capable GPU
    assert p.plan.flash_attention == 1.0 and p.plan.zero == 1.0 and p.plan.fp8 == 0.0
    # global_batch: smallest multiple of micro_batch*dp with >= 2**22 tokens
    assert v["global_batch"] == 2048 and v["global_batch"] * 2048 >= schema.DEFAULT_BATCH_TOKENS
    assert v["global_batch"] % 32 == 0 and (v["global_batch"] - 32) * 2048 < 2**22
    v1 = inputs.load_plan({"tp": 1, "pp": 2, "vpp": 2, "micro_batch": 3}, m, s).values
    assert v1["sequence_parallel"] is False and v1["overlap_p2p"] is True
    assert v1["global_batch"] == 2112  # 3 * 32 * 22: 22 * 96 * 2048 >= 2**22 > 21 * 96 * 2048
    assert list(v1)[:3] == ["tp", "pp", "dp"]


def test_plan_values_round_trip_and_enums():
    m, s = model(moe=MOE), system()
    p = inputs.load_plan("tp = 2 , ep=8, zero=3, dtype=fp8, recompute=full, "
                         "sequence_parallel=0, overlap_tp=1,", m, s)
    v = p.values
    assert (v["ep"], v["edp"], v["zero"], v["dtype"]) == (8, 8, 3, "fp8")
    assert v["sequence_parallel"] is False and v["overlap_tp"] is True
    assert (p.plan.zero, p.plan.fp8, p.plan.recompute) == (3.0, 1.0, 2.0)
    again = inputs.plan_from_values(v, m, s, "optimizer")
    assert again.plan == p.plan and again.values == v and again.origin == "optimizer"
    assert inputs.plan_from_values({"zero": "2"}, m, s, "x").values["zero"] == 2
    assert p.origin == "--plan"


def test_values_round_trip_through_loaders():
    m, s = model(moe=MOE, mla=MLA), system()
    assert inputs.load_model(m.values).model == m.model
    assert inputs.load_system(s.values).system == s.system


def test_plan_from_numpy_values():
    import numpy as np
    m, s = model(moe=MOE), system()
    p = inputs.plan_from_values({"tp": np.int64(2), "ep": np.int32(4), "vpp": np.float64(1.0),
                                 "sequence_parallel": np.bool_(True)}, m, s, "optimizer")
    assert (p.values["tp"], p.values["ep"], p.values["vpp"]) == (2, 4, 1)
    assert type(p.values["tp"]) is int and p.values["sequence_parallel"] is True
    assert type(p.plan.tp) is float


def test_sequence_parallel_with_tp1_is_allowed():
    p = inputs.load_plan({"tp": 1, "sequence_parallel": True}, model(), system())
    assert p.values["sequence_parallel"] is True


def test_attention_auto_on_a100():
    s = system({"gpu.matmul_tflops_fp8": DELETE, "gpu.matmul_tflops_bf16": 312.0})
    assert inputs.load_plan({}, model(), s).values["attention"] == "unfused"
    p = inputs.load_plan({"attention": "flash"}, model(), s)
    assert p.plan.flash_attention == 1.0


def test_cases_file_where_and_name(tmp_path):
    case = {"id": "c1", "source": "here", "model": MODEL["model"], "system": SYSTEM,
            "plan": PLAN["plan"], "measured": {"step_time_s": 2.5}}
    path = write(tmp_path, "cases.toml", {"case": [case, {**case, "id": "c2"}]})
    cases = inputs.load_cases(path)
    assert [c.id for c in cases] == ["c1", "c2"]
    assert cases[1].measured_step_time_s == 2.5 and cases[1].source == "here"
    assert cases[1].system.name == "c2"


def test_presets(presets):
    listed = inputs.list_presets()
    assert set(listed) == set(sources.KINDS)
    assert listed["models"] == [("tiny", "a tiny test model")]
    assert listed["systems"] == [("small", "small")]
    assert listed["gpus"] == [("TEST-GPU", "")]
    assert inputs.preset_path("models", "tiny") == presets / "models" / "tiny.toml"
    bad(lambda: inputs.preset_path("models", "nope"), "nope", "no such")
    bad(lambda: inputs.preset_path("widgets", "x"), "widgets", "kind")
    m = inputs.load_model("tiny")
    assert m.name == "tiny" and m.origin == "model preset 'tiny'"
    s = inputs.load_system("small")
    assert s.name == "small" and s.gpu_name == "H100"
    assert s.values["gpu"]["hbm_GB"] == 141.0  # the file overrides its GPU preset
    assert s.values["gpu"]["matmul_tflops_fp8"] == 1979.0  # from the preset
    assert "preset" not in s.values["gpu"]
    p = inputs.load_plan("p22", m, s)
    assert p.values["dp"] == 16


def test_gpu_preset_name_defaults_to_preset(presets, tmp_path):
    (presets / "gpus" / "NONAME.toml").write_text(
        to_toml({"gpu": {k: v for k, v in SYSTEM["gpu"].items() if k != "name"}}))
    s = inputs.load_system(edited(SYSTEM, {"gpu": {"preset": "NONAME"}}))
    assert s.gpu_name == "NONAME"


def test_scenario_preset(presets):
    sc = inputs.load_scenario("s")
    assert sc.name == "s" and sc.tokens == 1e9 and sc.global_batch is None
    assert sc.model.name == "tiny" and sc.system.name == "small"
    assert sc.plan is not None and sc.plan.values["tp"] == 2
    assert sc.origin == "scenario preset 's'"


def test_scenario_relative_paths_and_inline_plan(tmp_path):
    sub = tmp_path / "defs"
    sub.mkdir()
    write(sub, "m.toml", MODEL)
    write(sub, "s.json", SYSTEM)
    doc = {"scenario": {"model": "m.toml", "system": "s.json", "plan": {"tp": 4},
                        "global_batch": 128, "tokens": 2e12},
           "about": {"description": "a test scenario", "notes": ["one", "two"]}}
    sc = inputs.load_scenario(write(sub, "sc.toml", doc))
    assert sc.description == "a test scenario" and sc.name == "sc"
    assert sc.global_batch == 128 and sc.plan.values["global_batch"] == 128
    assert sc.plan.values["tp"] == 4
    no_plan = edited(doc, {"scenario.plan": DELETE})
    sc2 = inputs.load_scenario(write(sub, "sc2.toml", no_plan))
    assert sc2.plan is None and sc2.global_batch == 128


# --------------------------------------------------------------------------- bad: files
def test_bad_missing_toml_path(tmp_path):
    bad(lambda: inputs.load_model(tmp_path / "nope.toml"), "nope.toml", "no such file")


def test_bad_unknown_preset_name(presets):
    bad(lambda: inputs.load_model("llama-99"), "llama-99", "no such file or model preset")
    bad(lambda: inputs.load_plan("tp8", model(), system()), "tp8", "KEY=VALUE")


def test_bad_wrong_suffix(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text(to_toml(MODEL))
    bad(lambda: inputs.load_model(str(path)), "model.txt", ".toml or .json")


def test_bad_directory(tmp_path):
    (tmp_path / "d.toml").mkdir()
    bad(lambda: inputs.load_model(tmp_path / "d.toml"), "d.toml", "not a regular file")


def test_bad_unreadable(tmp_path, monkeypatch):
    path = write(tmp_path, "m.toml", MODEL)

    def deny(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pathlib.Path, "open", deny)  # read_document reads a capped prefix
    bad(lambda: inputs.load_model(path), "m.toml", "cannot read", "Permission denied")


def test_bad_not_utf8(tmp_path):
    path = tmp_path / "m.toml"
    path.write_bytes(b"[model]\nname = \"\xff\xfe\"\n")
    bad(lambda: inputs.load_model(path), "m.toml", "UTF-8")


def test_bad_malformed_toml(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text("[model]\nlayers = 8\nhidden 1024\n")
    bad(lambda: inputs.load_model(path), "m.toml", "malformed TOML", "line 3")


def test_bad_malformed_json(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"model": {\n"layers": 8,\n}}')
    bad(lambda: inputs.load_model(path), "m.json", "malformed JSON", "line 3")


def test_bad_json_duplicate_key(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"model": {"layers": 8, "layers": 9}}')
    bad(lambda: inputs.load_model(path), "m.json", "layers", "duplicate")


def test_bad_top_level_not_table(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("[1, 2]")
    bad(lambda: inputs.load_model(path), "m.json", "top level", "table")


def test_bad_ref_type():
    bad(lambda: inputs.load_model(42), "expected a file name")
    bad(lambda: inputs.load_model(""), "empty")


# --------------------------------------------------------------------------- bad: model
MODEL_BAD = [
    # (id, edits, moe, mla, key, word)
    ("unknown-key", {"model.layerz": 8}, None, None, "model.layerz", "unknown key"),
    ("missing-key", {"model.hidden": DELETE}, None, None, "model.hidden", "missing"),
    ("int-as-str", {"model.layers": "8"}, None, None, "model.layers", "int"),
    ("int-as-bool", {"model.layers": True}, None, None, "model.layers", "int"),
    ("int-fraction", {"model.layers": 8.5}, None, None, "model.layers", "int"),
    ("int-nonpositive", {"model.layers": 0}, None, None, "model.layers", "> 0"),
    ("bool-as-int", {"model.gated_ffn": 1}, None, None, "model.gated_ffn", "true or false"),
    ("str-as-int", {"model.name": 5}, None, None, "model.name", "string"),
    ("kv-divides-heads", {"model.kv_heads": 6}, None, None, "model.kv_heads", "divide"),
    ("head-dim-whole", {"model.heads": 48}, None, None, "model.head_dim", "whole number"),
    ("moe-top-k", {}, {**MOE, "top_k": 9}, None, "model.moe.top_k", "<="),
    ("moe-dense-layers", {}, {**MOE, "dense_layers": 9}, None, "model.moe.dense_layers",
     "model.layers"),
    ("moe-unknown", {}, {**MOE, "expert": 8}, None, "model.moe.expert", "unknown key"),
    ("moe-missing", {}, {"top_k": 2, "expert_ffn_hidden": 8}, None, "model.moe.experts",
     "missing"),
    ("moe-nan", {}, {**MOE, "capacity_factor": float("nan")}, None, "model.moe.capacity_factor",
     "finite"),
    ("moe-negative", {}, {**MOE, "shared_experts": -1}, None, "model.moe.shared_experts", ">= 0"),
    ("mla-gqa", {"model.kv_heads": 8}, None, MLA, "model.kv_heads", "MLA"),
    ("mla-missing", {}, None, {**MLA, "v_head_dim": DELETE}, "model.mla.v_head_dim", "missing"),
]


@pytest.mark.parametrize("edits,moe,mla,key,word", [c[1:] for c in MODEL_BAD],
                         ids=[c[0] for c in MODEL_BAD])
def test_bad_model(tmp_path, edits, moe, mla, key, word):
    doc = edited(MODEL, edits)
    if moe is not None:
        doc["model"]["moe"] = moe
    if mla is not None:
        doc["model"]["mla"] = {k: v for k, v in mla.items() if v is not DELETE}
    path = write(tmp_path, "bad_model.toml", doc)
    bad(lambda: inputs.load_model(path), "bad_model.toml", key, word)


STRUCTURE_BAD = [
    ("unknown-top", {**MODEL, "extra": {"a": 1}}, "extra", "unknown top-level"),
    ("unknown-top-scalar", {**MODEL, "layers": 8}, "layers", "unknown top-level"),
    ("missing-table", {"about": {"description": "x"}}, "model", "missing required table"),
    ("not-a-table", {"model": 5}, "model", "table"),
    ("moe-not-table", edited(MODEL, {"model.moe": 5}), "model.moe", "table"),
    ("about-unknown", {**MODEL, "about": {"title": "x"}}, "about.title", "unknown key"),
    ("about-description", {**MODEL, "about": {"description": 5}}, "about.description", "string"),
    ("about-sources", {**MODEL, "about": {"sources": "x"}}, "about.sources", "list"),
    ("about-notes", {**MODEL, "about": {"notes": [1]}}, "about.notes", "string"),
]


@pytest.mark.parametrize("doc,key,word", [c[1:] for c in STRUCTURE_BAD],
                         ids=[c[0] for c in STRUCTURE_BAD])
def test_bad_structure(tmp_path, doc, key, word):
    path = write(tmp_path, "bad_doc.json", doc)  # JSON: scalars and tables in any order
    bad(lambda: inputs.load_model(path), "bad_doc.json", key, word)


def test_bad_inline_model_where():
    bad(lambda: inputs.load_model({"layers": 0}, where="case X"), "case X", "model.layers")


# --------------------------------------------------------------------------- bad: system
SYSTEM_BAD = [
    ("unknown-key", {"scale_up.bandwith_GB_s": 1.0}, "scale_up.bandwith_GB_s", "did you mean"),
    ("missing-key", {"gpu.hbm_GB": DELETE}, "gpu.hbm_GB", "missing"),
    ("missing-table", {"cluster": DELETE}, "cluster", "missing required table"),
    ("unknown-table", {"fabric": {"x": 1}}, "fabric", "unknown top-level"),
    ("not-a-table", {"scale_out": 3}, "scale_out", "table"),
    ("nonpositive", {"scale_up.bandwidth_GB_s": -450.0}, "scale_up.bandwidth_GB_s", "> 0"),
    ("negative-latency", {"scale_out.latency_us": -1.0}, "scale_out.latency_us", ">= 0"),
    ("float-as-str", {"gpu.hbm_GB": "80"}, "gpu.hbm_GB", "float"),
    ("float-as-bool", {"gpu.hbm_GB": True}, "gpu.hbm_GB", "float"),
    ("float-inf", {"gpu.hbm_bandwidth_TB_s": float("inf")}, "gpu.hbm_bandwidth_TB_s", "finite"),
    ("scale-out-domain", {"scale_out.domain_size": 8}, "scale_out.domain_size", "unknown key"),
    ("cluster-zero", {"cluster.gpus": 0}, "cluster.gpus", "> 0"),
    ("radix-fraction", {"scale_up.switch_radix": 7.5}, "scale_up.switch_radix", "int"),
    ("gpu-preset-type", {"gpu.preset": 3}, "gpu.preset", "string"),
    ("gpu-preset-missing", {"gpu.preset": "NOPE"}, "gpu.preset", "no such GPU preset"),
]


@pytest.mark.parametrize("edits,key,word", [c[1:] for c in SYSTEM_BAD],
                         ids=[c[0] for c in SYSTEM_BAD])
def test_bad_system(tmp_path, presets, edits, key, word):
    path = write(tmp_path, "bad_system.toml", edited(SYSTEM, edits))
    bad(lambda: inputs.load_system(path), "bad_system.toml", key, word)


def test_bad_gpu_preset_file(presets):
    write(presets / "gpus", "BROKEN.toml", {"gpu": {"name": "b", "hbm_GB": 80.0}})
    bad(lambda: inputs.load_system(edited(SYSTEM, {"gpu": {"preset": "BROKEN"}})),
        "gpu preset 'BROKEN'", "gpu.matmul_tflops_bf16", "missing")
    write(presets / "gpus", "NESTED.toml", {"gpu": {**SYSTEM["gpu"], "preset": "BROKEN"}})
    bad(lambda: inputs.load_system(edited(SYSTEM, {"gpu": {"preset": "NESTED"}})),
        "gpu preset 'NESTED'", "gpu.preset", "unknown key")


OVERRIDE_BAD = [
    ("no-section", {"gpus": "8"}, "gpus", "SECTION.KEY"),
    ("bad-section", {"model.layers": "8"}, "model.layers", "SECTION.KEY"),
    ("unknown-key", {"scale_up.bandwidth": "8"}, "scale_up.bandwidth", "unknown key"),
    ("not-a-number", {"scale_up.bandwidth_GB_s": "fast"}, "scale_up.bandwidth_GB_s", "float"),
    ("negative", {"scale_up.bandwidth_GB_s": "-1"}, "scale_up.bandwidth_GB_s", "> 0"),
    ("nan", {"gpu.hbm_GB": "nan"}, "gpu.hbm_GB", "finite"),
    ("int-fraction", {"cluster.gpus": "8.5"}, "cluster.gpus", "int"),
    ("empty", {"cluster.gpus": " "}, "cluster.gpus", "empty"),
    ("typed-bad", {"cluster.gpus": True}, "cluster.gpus", "int"),
]


@pytest.mark.parametrize("overrides,key,word", [c[1:] for c in OVERRIDE_BAD],
                         ids=[c[0] for c in OVERRIDE_BAD])
def test_bad_override(overrides, key, word):
    bad(lambda: inputs.load_system(SYSTEM, overrides=overrides), "--set", key, word)


# --------------------------------------------------------------------------- bad: plan
PLAN_BAD = [
    # (id, model edits, moe, system edits, plan table, key, word)
    ("grid-divides-gpus", {}, None, {}, {"tp": 3}, "plan.tp", "must divide cluster.gpus"),
    ("tp-heads", {"model.heads": 12, "model.head_dim": 64}, None, {}, {"tp": 8}, "plan.tp",
     "model.heads"),
    ("tp-kv-heads", {"model.kv_heads": 2}, None, {}, {"tp": 4}, "plan.tp", "model.kv_heads"),
    ("tp-ffn", {"model.ffn_hidden": 4100}, None, {}, {"tp": 8}, "plan.tp", "model.ffn_hidden"),
    ("ep-dense", {}, None, {}, {"ep": 2}, "plan.ep", "mixture-of-experts"),
    ("etp-dense", {}, None, {}, {"etp": 2}, "plan.etp", "mixture-of-experts"),
    ("ep-experts", {}, MOE, {}, {"ep": 3}, "plan.ep", "model.moe.experts"),
    ("moe-regroup", {}, MOE, {}, {"pp": 8, "ep": 8, "etp": 2}, "plan.ep", "regroup"),
    ("etp-expert-ffn", {}, {**MOE, "expert_ffn_hidden": 1001}, {}, {"tp": 2, "etp": 2},
     "plan.etp", "expert_ffn_hidden"),
    ("cp-seq-len", {}, None, {"cluster.gpus": 96}, {"cp": 3}, "plan.cp", "model.seq_len"),
    ("sp-seq-len", {"model.seq_len": 2052}, None, {}, {"tp": 8}, "plan.tp", "sequence_parallel"),
    ("vpp-needs-pp", {}, None, {}, {"vpp": 2}, "plan.vpp", "pp > 1"),
    ("layers-stages", {}, None, {}, {"pp": 4, "vpp": 4}, "plan.pp", "model.layers"),
    ("batch-multiple", {}, None, {}, {"tp": 2, "pp": 2, "micro_batch": 2, "global_batch": 48},
     "plan.global_batch", "multiple of micro_batch*dp"),
    ("fp8-needs-peak", {}, None, {"gpu.matmul_tflops_fp8": DELETE}, {"dtype": "fp8"},
     "plan.dtype", "matmul_tflops_fp8"),
    ("dp-mismatch", {}, None, {}, {"tp": 2, "dp": 4}, "plan.dp", "derived"),
    ("edp-mismatch", {}, MOE, {}, {"ep": 8, "edp": 1}, "plan.edp", "derived"),
    ("unknown-key", {}, None, {}, {"tpp": 2}, "plan.tpp", "unknown key"),
    ("int-as-str", {}, None, {}, {"tp": "2"}, "plan.tp", "int"),
    ("int-as-bool", {}, None, {}, {"tp": True}, "plan.tp", "int"),
    ("nonpositive", {}, None, {}, {"micro_batch": 0}, "plan.micro_batch", "> 0"),
    ("enum", {}, None, {}, {"recompute": "some"}, "plan.recompute", "one of"),
    ("zero-range", {}, None, {}, {"zero": 4}, "plan.zero", "one of"),
    ("zero-bool", {}, None, {}, {"zero": True}, "plan.zero", "one of"),
    ("dtype-case", {}, None, {}, {"dtype": "BF16"}, "plan.dtype", "one of"),
    ("bool", {}, None, {}, {"sequence_parallel": "yes"}, "plan.sequence_parallel",
     "true or false"),
]


@pytest.mark.parametrize("m_edits,moe,s_edits,table,key,word", [c[1:] for c in PLAN_BAD],
                         ids=[c[0] for c in PLAN_BAD])
def test_bad_plan(tmp_path, m_edits, moe, s_edits, table, key, word):
    m, s = model(m_edits, moe=moe), system(s_edits)
    path = write(tmp_path, "bad_plan.toml", {"plan": table})
    bad(lambda: inputs.load_plan(path, m, s), "bad_plan.toml", key, word)


def test_bad_plan_structure(tmp_path):
    m, s = model(), system()
    path = write(tmp_path, "p.toml", {"about": {"description": "x"}})
    bad(lambda: inputs.load_plan(path, m, s), "p.toml", "plan", "missing required table")
    path = write(tmp_path, "p2.json", {"plan": 5})
    bad(lambda: inputs.load_plan(path, m, s), "p2.json", "plan", "table")
    bad(lambda: inputs.plan_from_values({"tp": 3}, m, s, "optimizer"), "optimizer:", "plan.tp")


INLINE_BAD = [
    ("no-equals", "tp=2,pp", "pp", "KEY=VALUE"),
    ("no-key", "=2", "=2", "KEY=VALUE"),
    ("empty-value", "tp=2, pp= ", "plan.pp", "empty value"),
    ("duplicate", "tp=2,tp=4", "plan.tp", "twice"),
    ("unknown", "tpp=2", "plan.tpp", "unknown key"),
    ("not-int", "tp=two", "plan.tp", "int"),
    ("bool-word", "sequence_parallel=maybe", "plan.sequence_parallel", "true, false, 1 or 0"),
    ("enum", "dtype=fp16", "plan.dtype", "one of"),
    ("empty-plan", " , ,=", "=", "KEY=VALUE"),
    ("rule", "tp=2, pp=3", "plan.tp", "must divide cluster.gpus"),
]


@pytest.mark.parametrize("text,key,word", [c[1:] for c in INLINE_BAD],
                         ids=[c[0] for c in INLINE_BAD])
def test_bad_inline_plan(text, key, word):
    bad(lambda: inputs.load_plan(text, model(), system()), "--plan", key, word)


# --------------------------------------------------------------------------- bad: cases
GOOD_CASE = {"id": "c1", "source": "s", "model": MODEL["model"], "system": SYSTEM,
             "plan": PLAN["plan"], "measured": {"step_time_s": 1.0}}
CASES_BAD = [
    ("unknown-key", {"extra": 1}, "case[1] 'c2'", "extra", "unknown key"),
    ("missing-measured", {"measured": DELETE}, "case[1]", "measured", "missing"),
    ("missing-step", {"measured": {}}, "case[1] 'c2'", "measured.step_time_s", "missing"),
    ("step-nonpositive", {"measured": {"step_time_s": 0.0}}, "case[1] 'c2'",
     "measured.step_time_s", "> 0"),
    ("measured-unknown", {"measured": {"step_time_s": 1.0, "tflops": 3.0}}, "case[1] 'c2'",
     "measured.tflops", "unknown key"),
    ("id-type", {"id": 7}, "case[1]", "id", "string"),
    ("duplicate-id", {"id": "c1"}, "case[1]", "id", "duplicate"),
    ("model-rule", {"model": {**MODEL["model"], "kv_heads": 5}}, "case[1] 'c2'",
     "model.kv_heads", "divide"),
    ("system-rule", {"system": edited(SYSTEM, {"gpu.hbm_GB": DELETE})}, "case[1] 'c2'",
     "gpu.hbm_GB", "missing"),
    ("plan-rule", {"plan": {"tp": 2, "pp": 3}}, "case[1] 'c2'", "plan.tp", "must divide"),
    ("plan-not-table", {"plan": "tp=2"}, "case[1] 'c2'", "plan", "table"),
]


@pytest.mark.parametrize("edits,where,key,word", [c[1:] for c in CASES_BAD],
                         ids=[c[0] for c in CASES_BAD])
def test_bad_cases(tmp_path, edits, where, key, word):
    second = {**GOOD_CASE, "id": "c2"}
    for name, value in edits.items():
        if value is DELETE:
            second.pop(name)
        else:
            second[name] = value
    path = write(tmp_path, "cases.toml", {"case": [GOOD_CASE, second]})
    bad(lambda: inputs.load_cases(path), f"cases.toml: {where}", key, word)


def test_bad_cases_structure(tmp_path):
    path = write(tmp_path, "c.json", {"case": []})
    bad(lambda: inputs.load_cases(path), "c.json", "case", "no [[case]]")
    path = write(tmp_path, "c2.json", {"case": {"id": "x"}})
    bad(lambda: inputs.load_cases(path), "c2.json", "case", "array of tables")
    path = write(tmp_path, "c3.json", {"cases": []})
    bad(lambda: inputs.load_cases(path), "c3.json", "cases", "unknown top-level")
    bad(lambda: inputs.load_cases(tmp_path / "none.toml"), "none.toml", "no such file")
    bad(lambda: inputs.load_cases("megatron"), "megatron", "no such file")


# --------------------------------------------------------------------------- bad: scenario
SCENARIO_BAD = [
    ("missing-model", {"model": DELETE}, "scenario.model", "missing"),
    ("unknown-key", {"gpus": 8}, "scenario.gpus", "unknown key"),
    ("batch-type", {"global_batch": 1.5}, "scenario.global_batch", "int"),
    ("batch-nonpositive", {"global_batch": 0}, "scenario.global_batch", "> 0"),
    ("tokens-nonpositive", {"tokens": -1.0}, "scenario.tokens", "> 0"),
    ("tokens-type", {"tokens": "1e12"}, "scenario.tokens", "float"),
    ("model-missing-file", {"model": "nope.toml"}, "scenario.model", "no such file"),
    ("system-missing-preset", {"system": "nope"}, "scenario.system", "no such file or system"),
    ("model-type", {"model": 5}, "scenario.model", "preset name"),
    ("batch-conflict", {"global_batch": 32, "plan": {"global_batch": 64}},
     "scenario.global_batch", "differs"),
    ("inline-plan-rule", {"plan": {"tp": 3}}, "scenario.plan", "plan.tp"),
    ("inline-model-rule", {"model": {**MODEL["model"], "layers": -1}}, "scenario.model",
     "model.layers"),
]


@pytest.mark.parametrize("edits,key,word", [c[1:] for c in SCENARIO_BAD],
                         ids=[c[0] for c in SCENARIO_BAD])
def test_bad_scenario(tmp_path, edits, key, word):
    write(tmp_path, "m.toml", MODEL)
    write(tmp_path, "s.toml", SYSTEM)
    table = {"model": "m.toml", "system": "s.toml"}
    for name, value in edits.items():
        if value is DELETE:
            table.pop(name)
        else:
            table[name] = value
    path = write(tmp_path, "bad_scenario.toml", {"scenario": table})
    bad(lambda: inputs.load_scenario(path), "bad_scenario.toml", key, word)


def test_bad_scenario_nested_file_names_that_file(tmp_path):
    write(tmp_path, "m.toml", edited(MODEL, {"model.layers": 0}))
    write(tmp_path, "s.toml", SYSTEM)
    path = write(tmp_path, "sc.toml", {"scenario": {"model": "m.toml", "system": "s.toml"}})
    bad(lambda: inputs.load_scenario(path), "m.toml", "model.layers", "> 0")


def test_specs_are_frozen():
    m = model()
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.name = "x"  # type: ignore[misc]

"""The study specification: :file:`study.toml` loaded and checked into a typed :class:`Study`.

``load_study(mode)`` reads the study file shipped with the package, loads the two fabric
presets and the workload presets it names, checks that they agree with each other (same
cluster, same GPU; every sequence length divides the batch tokens) and returns a frozen
:class:`Study`. Derived numbers are computed here, never written down:

    scale_up_ratio = (passage domain_size x bandwidth) / (copper domain_size x bandwidth)
                   = 512 x 2000 / (144 x 900) = 7.9   (the paper's "8x": aggregate pod bandwidth)
    global_batch(config) = global_batch_tokens / seq_len(config)                  (sequences)

``assumptions`` (the JSON's ``assumptions`` object) holds every ``[assumptions.*]`` table of
the study file verbatim, plus one entry per hardware number of the fabric and GPU presets
(``"copper.scale_up.domain_size"``, ``"gpu.matmul_tflops_fp8"``, ...), whose ``source`` is the
preset's own inline comment for that key and its ``[about] sources``, and one entry per
workload. Every entry has a non-empty ``source``.

Example::

    study = load_study("quick")
    study.scale_up_ratio            # 7.9
    study.global_batch("config4")   # 2304 sequences of 16384 tokens
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import tomllib
from typing import Any

from cpo_opt.inputs.loaders import InputError, ModelSpec, SystemSpec, load_model, load_system
from cpo_opt.inputs.sources import preset_path
from cpo_opt.model.transformer import param_counts

STUDY_FILE = pathlib.Path(__file__).with_name("study.toml")
MODES = ("full", "quick", "tiny")
FABRICS = ("copper", "passage")


@dataclasses.dataclass(frozen=True)
class Mode:
    """How much searching and sweeping a run does (knobs of the run, not assumptions)."""

    name: str
    search_starts: int
    search_steps: int
    headline_exhaustive_max_plans: int
    sweep_exhaustive_max_plans: int
    headline_configs: tuple[str, ...]
    sweep_configs: tuple[str, ...]
    domain_sizes: tuple[int, ...]
    bandwidths_GB_s: tuple[float, ...]
    tokens_per_gpu: tuple[int, ...]
    batch_configs: tuple[str, ...]
    paper_figure_variants: bool
    codesign_starts: int
    codesign_steps: int
    pareto_budget_fractions: tuple[float, ...]
    dtype_variant: bool
    sensitivity_top: int


@dataclasses.dataclass(frozen=True)
class Study:
    """Everything the study holds fixed, loaded and checked.

    Attributes:
      fabrics: ``{"copper": SystemSpec, "passage": SystemSpec}``.
      models: every workload of the study file by name (all four, whatever the mode).
      tokens: training tokens (same for every config).
      batch_tokens: tokens per optimizer step (same for every config).
      dtype, dtype_variant: plan precision of the study and of its variant.
      gpus: cluster size (the same in both fabric presets).
      scale_up_ratio: aggregate pod bandwidth, Passage over copper, computed.
      paper_figure: the ``[paper_figure]`` table (workload, bars with system preset and
        published relative time, source).
      knee_threshold: per-doubling improvement under which a sweep has reached its knee.
      codesign_bounds: ``{field: (low, high)}`` of the co-design search (file units).
      mode: the run's :class:`Mode`.
      assumptions: ``{name: {"value", "source", ...}}`` for the JSON (see module docstring).
    """

    name: str
    description: str
    fabrics: dict[str, SystemSpec]
    fabric_presets: dict[str, str]
    models: dict[str, ModelSpec]
    tokens: float
    batch_tokens: int
    dtype: str
    dtype_variant: str
    gpus: int
    scale_up_ratio: float
    knee_threshold: float
    codesign_bounds: dict[str, tuple[float, float]]
    mode: Mode
    assumptions: dict[str, dict[str, Any]]
    paper_figure: dict[str, Any] = dataclasses.field(default_factory=dict)
    constants: Any = None
    """The constants table the study runs with (``--constants``; None: shipped)."""
    stack: Any = None
    """The software stack both fabrics run on and search over (the study file's
    ``[study] stack``, or ``--stack``; :class:`cpo_opt.inputs.stacks.StackSpec`)."""

    def global_batch(self, config: str, tokens_per_gpu: int | None = None) -> int:
        """Sequences per step of ``config``: ``batch_tokens / seq_len`` (or
        ``tokens_per_gpu x gpus / seq_len`` when given)."""
        tokens = self.batch_tokens if tokens_per_gpu is None else tokens_per_gpu * self.gpus
        return int(tokens) // int(self.models[config].values["model"]["seq_len"])

    @property
    def tokens_per_gpu(self) -> int:
        """The study's tokens per GPU per step, ``batch_tokens / gpus``."""
        return self.batch_tokens // self.gpus

    def params_total(self, config: str) -> float:
        """Total parameters of ``config`` (:func:`cpo_opt.model.transformer.param_counts`)."""
        return float(param_counts(self.models[config].model)[0])

    def params_active(self, config: str) -> float:
        """Active parameters per token of ``config``."""
        return float(param_counts(self.models[config].model)[1])


def _read(path: pathlib.Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"{path}: cannot read the study file: {e}") from None


_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*[^#]*?#\s*(.+?)\s*$")
_SECTION = re.compile(r"^\s*\[([A-Za-z0-9_.]+)\]\s*(?:#\s*(.+?))?\s*$")


def inline_comments(path: pathlib.Path) -> dict[str, str]:
    """``{"section.key": comment}`` of a preset file's inline ``# ...`` comments.

    A section header's comment applies to the keys of that section that have none of their
    own (``[scale_out]  # the same network for both fabrics``).
    """
    out: dict[str, str] = {}
    section, section_note = "", ""
    for line in path.read_text().splitlines():
        m = _SECTION.match(line)
        if m:
            section, section_note = m.group(1), m.group(2) or ""
            continue
        m = _LINE.match(line)
        if m:
            out[f"{section}.{m.group(1)}"] = m.group(2)
        elif (m2 := re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)) and section_note:
            out.setdefault(f"{section}.{m2.group(1)}", section_note)
    return out


def _hardware_assumptions(fabric: str, preset: str, spec: SystemSpec) -> dict[str, dict]:
    """One assumption per number written in a fabric preset (and, once, its GPU preset)."""
    path = preset_path("systems", preset)
    doc = _read(path)
    notes = inline_comments(path)
    about = "; ".join(doc.get("about", {}).get("sources", []))
    out = {}
    for section in ("scale_up", "scale_out", "cluster"):
        for key in doc.get(section, {}):
            name = f"{section}.{key}"
            note = notes.get(name, "")
            if not note:  # the other fabric's comment for the same shared field
                other = "study-copper" if preset != "study-copper" else "study-passage"
                note = inline_comments(preset_path("systems", other)).get(name, "")
            out[f"{fabric}.{name}"] = {
                "value": spec.values[section][key],
                "source": f"{preset} preset, {name}: {note}" + (f" [preset sources: {about}]"
                                                               if about else ""),
            }
    return out


def _gpu_assumptions(gpu: str) -> dict[str, dict]:
    path = preset_path("gpus", gpu)
    doc = _read(path)
    notes = inline_comments(path)
    about = "; ".join(doc.get("about", {}).get("sources", []))
    return {f"gpu.{k}": {"value": v, "source": f"{gpu} GPU preset, gpu.{k}: "
                         f"{notes.get('gpu.' + k, '')} [preset sources: {about}]"}
            for k, v in doc["gpu"].items() if k != "name"}


def _workload_assumption(spec: ModelSpec, path: pathlib.Path) -> dict:
    about = _read(path).get("about", {})
    total, active = (float(x) for x in param_counts(spec.model))
    return {
        "value": {**spec.values["model"], "moe": spec.values.get("model.moe", {}),
                  "params_total": total, "params_active": active},
        "source": f"{spec.name} model preset ({path.name}): " + "; ".join(about.get("sources", [])),
        "why": " ".join(about.get("notes", [])),
    }


def _mode(name: str, table: dict) -> Mode:
    fields = {f.name for f in dataclasses.fields(Mode)} - {"name"}
    missing = fields - set(table)
    unknown = set(table) - fields
    if missing or unknown:
        raise InputError(f"{STUDY_FILE.name}: modes.{name}: missing keys {sorted(missing)}, "
                         f"unknown keys {sorted(unknown)}")
    tup = {k: tuple(v) for k, v in table.items() if isinstance(v, list)}
    return Mode(name=name, **{**table, **tup})


def load_study(mode: str = "full", path: str | pathlib.Path | None = None,
               constants=None, stack=None) -> Study:
    """Load and check the study file; ``mode`` is ``"full"``, ``"quick"`` or ``"tiny"``;
    ``constants`` (a constants table, ``--constants``) replaces the shipped constants in
    every system the study loads; ``stack`` (``--stack``) replaces the study file's
    ``[study] stack``.

    Raises:
      InputError: unknown mode, a missing preset, presets that disagree (cluster size, GPU),
        a sequence length that does not divide the batch tokens.
    """
    if mode not in MODES:
        raise InputError(f"study mode: must be one of {', '.join(MODES)} (got {mode!r})")
    path = pathlib.Path(path) if path else STUDY_FILE
    doc = _read(path)
    where = path.name
    a = {k: dict(v) for k, v in doc["assumptions"].items()}
    for k, v in a.items():
        if not str(v.get("source", "")).strip():
            raise InputError(f"{where}: assumptions.{k}.source: every assumption needs a source")
    presets = dict(doc["fabrics"])
    fabrics = {f: load_system(presets[f], constants=constants) for f in FABRICS}
    gpus = {f: int(s.values["cluster"]["gpus"]) for f, s in fabrics.items()}
    if len(set(gpus.values())) != 1 or gpus["copper"] != int(a["cluster_gpus"]["value"]):
        raise InputError(f"{where}: assumptions.cluster_gpus: the fabric presets must hold the "
                         f"same cluster (got {gpus}, study {a['cluster_gpus']['value']})")
    gpu_names = {s.gpu_name for s in fabrics.values()}
    if len(gpu_names) != 1:
        raise InputError(f"{where}: fabrics: both fabrics must use the same GPU (got {gpu_names})")
    batch_tokens = int(a["global_batch_tokens"]["value"])
    models = {}
    for name in doc["workloads"]["configs"]:
        spec = load_model(name)
        seq = int(spec.values["model"]["seq_len"])
        if batch_tokens % seq:
            raise InputError(f"{where}: assumptions.global_batch_tokens: {batch_tokens} is not a "
                             f"multiple of {name}'s seq_len {seq}")
        models[name] = spec
    m = _mode(mode, doc["modes"][mode])
    for c in m.headline_configs + m.sweep_configs + m.batch_configs:
        if c not in models:
            raise InputError(f"{where}: modes.{mode}: unknown config {c!r}")
    ratio = aggregate_pod_bandwidth(fabrics["passage"]) / aggregate_pod_bandwidth(fabrics["copper"])
    a["scale_up_ratio"] = {**a["scale_up_ratio"], "value": ratio}
    for f in FABRICS:
        a.update(_hardware_assumptions(f, presets[f], fabrics[f]))
    a.update(_gpu_assumptions(gpu_names.pop()))
    for name, spec in models.items():
        a[f"workload.{name}"] = _workload_assumption(spec, preset_path("models", name))
    bounds = {k: (float(v[0]), float(v[1])) for k, v in a["codesign_bounds"]["value"].items()}
    from cpo_opt.inputs.stacks import load_stack
    st = load_stack(stack if stack is not None else doc["study"].get("stack"))
    a["software_stack"] = {
        "value": st.name, "options": {k: {"value": v, "source": st.sources.get(k, "")}
                                      for k, v in st.options.items()},
        "choose": list(st.choose),
        "source": f"stack preset {st.name!r} ({st.origin}): {st.description}",
        "why": "Both fabrics run the same software stack, and each fabric's search chooses "
               "the same options from it, so the speedup compares fabrics, not software."}
    fig = dict(doc.get("paper_figure", {}))
    if fig:
        if not str(fig.get("source", "")).strip():
            raise InputError(f"{where}: paper_figure.source: the figure needs a source")
        a["paper_figure"] = {"value": {"workload": fig["workload"], "bars": fig["bars"],
                                       "tokens_per_gpu": batch_tokens // gpus["copper"]},
                             "source": fig["source"], "why": fig.get("why", "")}
        for bar in fig["bars"]:
            spec = load_system(bar["system"], constants=constants)
            a.update(_hardware_assumptions(f"paper_figure.{bar['system']}", bar["system"], spec))
        if fig["workload"] not in models:
            spec = load_model(fig["workload"])
            a[f"workload.{fig['workload']}"] = _workload_assumption(
                spec, preset_path("models", fig["workload"]))
    return Study(
        name=doc["study"]["name"], description=doc["study"]["description"],
        fabrics=fabrics, fabric_presets=presets, models=models,
        tokens=float(a["training_tokens"]["value"]), batch_tokens=batch_tokens,
        dtype=str(a["dtype"]["value"]), dtype_variant=str(a["dtype_variant"]["value"]),
        gpus=gpus["copper"], scale_up_ratio=ratio,
        knee_threshold=float(a["knee_threshold"]["value"]), codesign_bounds=bounds,
        constants=constants, stack=st,
        mode=m, assumptions=a, paper_figure=fig)


def aggregate_pod_bandwidth(system: SystemSpec) -> float:
    """GPUs per scale-up domain x per-GPU bandwidth per direction (GB/s)."""
    up = system.values["scale_up"]
    return float(up["domain_size"]) * float(up["bandwidth_GB_s"])

"""``cpo-opt reproduce``: the whole copper-vs-Passage study in one call.

``reproduce(quick, out_dir, progress, mode)`` loads the study (:mod:`cpo_opt.study.spec`),
then runs, in order,

1. the headline (:mod:`~cpo_opt.study.headline`): each config's optimum on each fabric,
   time to train, speedup, its interval over the constants' ranges
   (:mod:`~cpo_opt.study.uncertainty`), and the explanation (:mod:`~cpo_opt.study.explain`);
2. the paper's figure bar by bar (:mod:`~cpo_opt.study.paper_figure`; in the full run also
   every candidate explanation of the difference);
3. the sweeps and knees (:mod:`~cpo_opt.study.sweeps`), and the batch sweep (tokens per GPU
   per step, both fabrics re-optimized, the speedup split into parts of the step);
3. co-design under the copper power and the power Pareto front (:mod:`~cpo_opt.study.codesign`);
4. elasticities of time to train at every optimum (:mod:`~cpo_opt.study.elasticity`);

writes the files (:mod:`~cpo_opt.study.outputs`, :mod:`~cpo_opt.study.plots`) and returns the
object of ``reproduce --json`` (strictly valid JSON: no NaN or infinity). Progress goes to
standard error (one tqdm bar over the searches).

Modes: ``"full"`` (default), ``"quick"`` (``quick=True``: gradient search only, two configs
swept at four points each), ``"tiny"`` (the test suite's run). See ``[modes]`` in study.toml.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from cpo_opt.study import codesign as codesign_mod
from cpo_opt.study import elasticity, outputs, paper_figure, plots, sweeps
from cpo_opt.study.headline import config_entry, optimum
from cpo_opt.study.spec import FABRICS, Study, load_study

CODESIGN_CONFIG = "config4"
"""The co-design and Pareto workload: the study's most communication-demanding config."""


class _Progress:
    """One tqdm bar over the run's searches (a no-op when disabled)."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc="reproduce", unit="search", file=sys.stderr,
                            leave=False)

    def __call__(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _total(study: Study) -> int:
    m = study.mode
    head = len(m.headline_configs) * len(FABRICS) * (2 if m.dtype_variant else 1)
    sw = len(m.sweep_configs) * (len(m.domain_sizes) + len(m.bandwidths_GB_s))
    sw += len(m.batch_configs) * len(m.tokens_per_gpu)
    sw += 3 * (len(paper_figure.VARIANTS) if m.paper_figure_variants else 1)
    extra = 0 if CODESIGN_CONFIG in m.headline_configs else len(FABRICS)
    return head + sw + extra + 1 + len(m.pareto_budget_fractions) + head // (
        2 if m.dtype_variant else 1)


def reproduce(quick: bool = False, out_dir: str | None = "out/reproduce",
              progress: bool = True, mode: str | None = None,
              constants=None, stack=None) -> dict[str, Any]:
    """Run the study; write files into ``out_dir`` (None: write nothing); return the object.

    Args:
      quick: the reduced run (``mode="quick"``).
      out_dir: output folder: written into a fresh directory beside it and renamed into
        place (:func:`cpo_opt.study.outputs.staged`); an earlier result there is replaced
        (said on standard error); a file, a link or a folder holding anything else is
        refused before the run (:func:`cpo_opt.study.outputs.check_target`).
      progress: a progress bar on standard error.
      mode: ``"full"``, ``"quick"`` or ``"tiny"``; overrides ``quick``.
      constants: a constants table (``--constants``) instead of the shipped constants; the
        speedup intervals then use its fitted intervals where it has them.
      stack: the software stack (``--stack``) instead of the study file's.
    """
    t0 = time.perf_counter()
    replaces = out_dir is not None and outputs.check_target(out_dir)  # refuse a bad --out now
    study = load_study(mode or ("quick" if quick else "full"), constants=constants, stack=stack)
    m = study.mode
    tick = _Progress(_total(study), progress)
    try:
        configs, optima = [], {}
        for c in m.headline_configs:
            entry, optima[c] = config_entry(study, c, tick)
            configs.append(entry)

        fig = paper_figure.figure(study, paper_figure.BASE, tick)
        fig_variants = paper_figure.variants(study, tick=tick) if m.paper_figure_variants else None

        batch_rows, batch_why = [], []
        for c in m.batch_configs:
            rows = sweeps.batch_sweep(study, c, m.tokens_per_gpu, tick, optima.get(c))
            batch_rows += rows
            batch_why.append(sweeps.batch_why(rows))

        sweep_rows, knees = [], []
        for c in m.sweep_configs:
            for kind, values in (("domain", m.domain_sizes), ("bandwidth", m.bandwidths_GB_s)):
                rows = sweeps.run_sweep(study, c, kind, values, tick)
                sweep_rows += rows
                knees.append(sweeps.knee_report(rows, study.knee_threshold))

        if CODESIGN_CONFIG not in optima:
            optima[CODESIGN_CONFIG] = {}
            for f in FABRICS:
                optima[CODESIGN_CONFIG][f] = optimum(study, CODESIGN_CONFIG, f)
                tick(f"{CODESIGN_CONFIG} {f}")
        head4 = optima[CODESIGN_CONFIG]
        cd = codesign_mod.codesign(study, CODESIGN_CONFIG, head4,
                                   exhaustive_check=m.sweep_exhaustive_max_plans > 0)
        tick("codesign")
        front = codesign_mod.pareto(study, CODESIGN_CONFIG, head4, tick)

        sens = []
        for c in m.headline_configs:
            for f in FABRICS:
                if optima[c][f]["plan"] is not None:
                    sens.append(elasticity.elasticities(study, c, f, optima[c][f],
                                                        m.sensitivity_top))
                tick(f"sensitivity {c} {f}")
    finally:
        tick.close()

    obj: dict[str, Any] = {
        "scale_up_ratio": study.scale_up_ratio,
        "configs": configs,
        "paper_figure": [{k: r[k] for k in ("name", "paper_relative_time", "model_relative_time",
                                            "model_relative_time_same_plan")}
                         for r in fig["rows"]],
        "paper_figure_detail": fig,
        "paper_figure_variants": fig_variants,
        "batch_sweep": batch_rows,
        "batch_sweep_why": batch_why,
        "assumptions": study.assumptions,
        "sweeps": sweep_rows,
        "knees": knees,
        "codesign": cd,
        "pareto": front,
        "sensitivity": sens,
        "sensitivity_summary": elasticity.summary_text(sens),
        "mode": m.name,
        "quick": m.name != "full",
        "out_dir": None if out_dir is None else str(out_dir),
    }
    obj["wall_s"] = time.perf_counter() - t0
    obj = outputs.clean(obj)
    obj["warnings"] = sorted({n for spec in study.fabrics.values()
                              for n in [getattr(spec.constants, "note", None)] if n})
    if out_dir is not None:
        if replaces:
            obj["warnings"].append(f"replaced the earlier result in {out_dir}")
        with outputs.staged(out_dir) as stage:  # a fresh directory, renamed into place
            obj["files"] = list(outputs.FILES) + plots.write_all(obj, stage)
            outputs.write_all(obj, stage)
        if replaces:
            print(f"reproduce: replaced the earlier result in {out_dir}", file=sys.stderr)
    return obj

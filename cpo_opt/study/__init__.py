"""The copper-vs-Passage study (Lightmatter, Hot Interconnects 2025), rebuilt.

Public surface::

    from cpo_opt.study import load_study, reproduce
    study = load_study("quick")          # typed spec of study.toml (+ presets)
    obj = reproduce(quick=True, out_dir="out/reproduce")

Modules, one concept each: ``spec`` (study.toml -> :class:`Study`), ``optimum`` (best plan of
one workload on one system), ``headline`` (configs x fabrics, speedups), ``uncertainty`` (the
speedup's interval over the constants' ranges), ``paper_figure`` (the paper's 512-GPU figure
bar by bar, and the candidate assumptions behind it), ``explain`` (why, from the numbers),
``sweeps`` (time to train vs domain size / bandwidth / tokens per GPU, knees), ``codesign``
(power-budgeted co-design, Pareto front), ``elasticity`` (sensitivities at the optima),
``outputs`` (markdown, CSV, JSON), ``plots`` (PNG), ``reproduce`` (all of it).
"""

from cpo_opt.study.reproduce import reproduce
from cpo_opt.study.spec import Mode, Study, load_study

__all__ = ["Study", "Mode", "load_study", "reproduce"]

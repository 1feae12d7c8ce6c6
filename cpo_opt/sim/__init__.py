"""The event simulator: the test oracle and explanation tool of the closed-form step time.

``simulate(model, system, plan, layout=None) -> SimResult`` schedules one training step as
a graph of per-layer tasks on per-GPU queues (:mod:`cpo_opt.sim.simulate`). It imports only
:mod:`cpo_opt.model`, whose primitives give each task its duration; the schedule, the
dependencies and the overlap are its own. See docs/simulator.md.
"""

from cpo_opt.sim.layout import Stage, megatron_layout
from cpo_opt.sim.simulate import Segment, SimOptions, SimResult, default_layout, simulate

__all__ = ["Segment", "SimOptions", "SimResult", "Stage", "default_layout", "megatron_layout", "simulate"]

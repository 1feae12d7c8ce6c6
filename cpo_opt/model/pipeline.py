"""The pipeline layout: which layers each pipeline rank holds, and how many micro-batches of
activations it keeps in flight.

Megatron-Core splits the ``L`` layers over ``P = pp vpp`` virtual stages; virtual stage ``c``
runs on pipeline rank ``c mod pp`` (interleaving), the embedding on stage 0 and the output
layer with the loss on stage ``P - 1``. Three ranks bound the step and the memory:

* the **first** rank (rank 0): the first stage (with the embedding) and ``vpp - 1`` middle
  stages; it holds the most micro-batches in flight;
* a **middle** rank (rank 1, the busiest of the ranks holding only middle stages);
* the **last** rank (rank ``pp - 1``): ``vpp - 1`` middle stages and the last stage (with the
  output layer and the loss).

Layouts (``plan.pipeline_layout`` / ``plan.layout_balanced``):

* ``even``: a virtual stage holds ``c = ceil(L / P)`` layers (Megatron's default split;
  when ``L`` does not divide, the largest stage is counted on the first and the last stage
  too, the worst case, and a rank holding ``j`` middle stages holds ``ceil(j M / (P - 2))``
  of the ``M`` middle layers, as in the balanced layout), the output layer on top of the
  last stage's.
* ``balanced``: the output layer and loss count as ``k_h = max(1, round(t_head / t_layer))``
  layers (their kernel time over one layer's) and the embedding as ``k_e = 1`` layer
  (:data:`EMBEDDING_LAYERS`), so the stages hold ``c = ceil((L + k_h + k_e) / P)``
  layer-equivalents: the first stage ``c - k_e`` layers, the last ``max(c - k_h, 0)``, the
  ``P - 2`` middle stages the rest evenly (the largest ``ceil(M / (P - 2))``; a rank holding
  ``j`` middle stages holds ``ceil(j M / (P - 2))`` of the ``M`` layers: the layout places the
  stages one layer larger on different ranks). Megatron-Core's
  ``--account-for-embedding-in-pipeline-split --account-for-loss-in-pipeline-split`` is the
  case ``k_h = 1``; ``--decoder-first/last-pipeline-num-layers`` or
  ``--pipeline-model-parallel-layout`` express any of them.
* explicit ``first_stage_layers`` / ``last_stage_layers`` (``>= 0``) override either.

MoE models with ``dense_layers`` leading dense layers: the first stage holds
``min(first, L_dense)`` of them; every other stage is counted with as many MoE layers as the
model has (the worst case, as before).

DualPipe (``plan.schedule = 1``, deepseek-ai/DualPipe): ``P = pp`` stages, rank ``r`` holds
stage ``r`` and stage ``pp - 1 - r``, so rank 0 (and ``pp - 1``) holds both ends, embedding
and head; a micro-batch passes through one of a rank's two stages (``per_mb = 1/2`` of what
the rank holds), and every rank keeps ``pp + 1`` micro-batches of one stage in flight.

In flight (1F1B, Megatron's schedules; Korthikanti et al. 2022 sec. 4.2.3 for rank 0): with
``vpp = 1`` rank ``r`` holds ``min(m, pp - r)`` micro-batches; interleaved, rank ``r`` runs
``2 (pp - r - 1) + (vpp - 1) pp`` warm-up chunks (Megatron-Core
``get_pipeline_parallel_order``/``forward_backward_pipelining_with_interleaving``) and so holds
``min(m vpp, 2 (pp - r - 1) + (vpp - 1) pp + 1)`` chunk activations, ``/ vpp`` in micro-batches
of the whole rank: ``pp (1 + (pp - 1) / (pp vpp))`` for rank 0. ``pp`` there is Megatron-Core's
micro-batch group per virtual stage (:func:`group`): when ``m`` is not a multiple of ``pp``
the group is ``m``, and the warm-up holds (almost) every chunk.

Merged (EP-overlapped) micro-batches (:func:`steady_share`): Megatron-Core's combined 1F1B
runs the warm-up forwards and the cool-down backwards unmerged.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cpo_opt.model import smooth
from cpo_opt.model import transformer
from cpo_opt.model.config import Model, Plan
from cpo_opt.model.structure import Structure


EMBEDDING_LAYERS = 1.0
"""Layer-equivalents of the embedding in the balanced split: Megatron-Core's
``--account-for-embedding-in-pipeline-split`` counts it as one layer (its lookup costs no
GEMM, but its ``vocab x hidden`` weights, their gradients and optimizer states and its output
sit on the first stage)."""


@dataclasses.dataclass(frozen=True)
class RankLoad:
    """What one pipeline rank holds: layers by kind, the embedding and the output layer
    (0/1), the share of them one micro-batch passes through, and micro-batches in flight."""

    dense: object
    moe: object
    embedding: object
    head: object
    per_mb: object
    in_flight: object

    @property
    def layers(self):
        return self.dense + self.moe


@dataclasses.dataclass(frozen=True)
class Layout:
    """The three ranks that bound a step and its memory, and the stage sizes (layers of the
    first, a middle and the last virtual stage)."""

    first: RankLoad
    middle: RankLoad
    last: RankLoad
    first_stage: object
    middle_stage: object
    last_stage: object

    first_chunk: RankLoad = None
    """Rank 0's first virtual stage (with the embedding); with ``vpp > 1`` its gradients are
    reduced last and its parameters gathered first (:mod:`cpo_opt.model.step`, DP)."""
    middle_chunk: RankLoad = None
    """One middle virtual stage (the first chunk of the other ranks)."""

    def ranks(self) -> tuple[RankLoad, RankLoad, RankLoad]:
        return self.first, self.middle, self.last

    def first_chunks(self) -> tuple[RankLoad, RankLoad, RankLoad]:
        """Each of :meth:`ranks`' first virtual stage (rank 0's with the embedding)."""
        return self.first_chunk, self.middle_chunk, self.middle_chunk


def drain_lead(plan: Plan) -> tuple:
    """Backward chunks by which each of :meth:`Layout.ranks`' last backward ends before rank
    0's: the drain runs from the last rank to the first, so rank ``r`` leads by ``r`` chunks
    (the middle rank taken as rank 1, the least lead of any middle rank); DualPipe ends both
    directions on rank 0 (no lead). Without DP overlap each rank reduces its gradients after
    its own last backward (:mod:`cpo_opt.model.step`, DP; simulator D1)."""
    one = 1.0 - plan.schedule
    return 0.0, jnp.minimum(1.0, plan.pp - 1.0) * one, (plan.pp - 1.0) * one


def gathers_on_first_use(interleaved) -> tuple:
    """Which of :meth:`Layout.ranks` gather their first parameter bucket on first use, before
    their first forward (nothing to hide it): the first rank, without interleaving (with it
    the first chunk's gather is already counted, :mod:`cpo_opt.model.step`, DP; simulator D2)."""
    return 1.0 - interleaved, 0.0, 0.0


def bucketed_ranks() -> tuple:
    """Which of :meth:`Layout.ranks` split their gradients into DDP buckets: the first only
    (its first chunk, interleaved). Megatron-Core core_v0.19.0 ``DistributedDataParallel``
    sets ``bucket_size = None`` (one bucket) when ``pp_rank > 0`` or for the later chunks
    (``disable_bucketing``), "since data-parallel communication on these stages is not on
    the critical path"; each bucket is a collective paying its latency
    (:mod:`cpo_opt.model.step`, DP; simulator D20)."""
    return 1.0, 0.0, 0.0


def group(plan: Plan, microbatches, temperature: float = 0.0):
    """Micro-batches per group of an interleaved schedule (Megatron-Core core_v0.19.0
    ``microbatch_group_size_per_vp_stage``, default ``pp``; ``schedules.py`` refuses a group
    outside ``[pp, m]`` and a last group of ``1..pp-1`` micro-batches): ``min(pp, m)`` when
    ``pp`` divides ``m`` (the default), else ``m``, one group of every micro-batch
    (``--microbatch-group-size-per-virtual-pipeline-stage m``, always runnable; the simulator
    runs the same). The relaxed model keeps ``min(pp, m)`` (divisibility has no derivative)."""
    m, pp = microbatches, plan.pp
    base = smooth.smin(pp, m, temperature)
    if not smooth.is_exact(temperature):
        return base
    return jnp.where(jnp.mod(m, pp) < 0.5, base, m)


def neighbour_share(microbatches, temperature: float = 0.0):
    """Share of ``m`` micro-batches with a neighbour to overlap with: ``(m - 1) / m``."""
    m = microbatches
    return smooth.relu(m - 1.0, 1.0, temperature) / jnp.maximum(m, 1.0)


def steady_share(plan: Plan, microbatches, temperature: float = 0.0):
    """Share of the micro-batches an EP-overlapped 1F1B merges with a neighbour: without a
    pipeline ``(m - 1) / m`` (the first forward and the last backward alone: Megatron-Core
    ``combined_1f1b_schedule_for_no_pipelining``); with one, the virtual micro-batches past
    the last rank's warm-up, ``(m vpp - w) / (m vpp)`` with ``w = min(m vpp, (vpp - 1) g + 1)``
    (``get_pp_rank_microbatches``: ``2 (pp - r - 1) + (vpp - 1) g`` warm-up forwards, one
    more with the A2A overlap, ``g`` the :func:`group`); the last rank, with the fewest
    warm-ups, paces the steady state. DualPipe: ``(m - 1) / m``."""
    t, m = temperature, microbatches
    neighbour = neighbour_share(m, t)
    virtual = m * plan.vpp
    warmup = smooth.smin(virtual, (plan.vpp - 1.0) * group(plan, m, t) + 1.0, t)
    steady = smooth.relu(virtual - warmup, 1.0, t) / jnp.maximum(virtual, 1.0)
    return jnp.minimum(steady + plan.schedule * (neighbour - steady), 1.0)


RANK_NAMES = ("first", "middle", "last")
"""Names of :meth:`Layout.ranks` in order (reports: ``memory_rank``)."""


def head_layers(t_head, t_layer):
    """``k_h``: the output layer's kernel time in whole layers, ``round(t_head / t_layer)``
    (piecewise constant: no derivative)."""
    ratio = jax.lax.stop_gradient(t_head / jnp.maximum(t_layer, 1e-30))
    return jnp.round(ratio)


def layout(model: Model, plan: Plan, microbatches, t_head, t_layer, structure: Structure,
           temperature: float = 0.0) -> Layout:
    """The pipeline layout of ``plan`` (module docstring); ``t_head`` / ``t_layer``: kernel
    seconds of the output layer and of one (MoE, else dense) layer, for the balanced split."""
    t = temperature
    L = model.layers
    l_moe = transformer.moe_layers(model, structure)
    l_dense = L - l_moe
    dual = plan.schedule
    vpp = plan.vpp + dual * (1.0 - plan.vpp)           # DualPipe: vpp 1 (a plan rule)
    P = plan.pp * vpp
    k_h = jnp.maximum(head_layers(t_head, t_layer), 1.0) * plan.layout_balanced
    k_e = EMBEDDING_LAYERS * plan.layout_balanced
    c = smooth.ceil((L + k_h + k_e) / P, t)
    f_auto = smooth.smin(jnp.maximum(c - k_e, 0.0), L, t)
    l_auto = jnp.clip(c - k_h, 0.0, jnp.maximum(L - f_auto, 0.0))
    f = jnp.where(plan.first_stage_layers >= 0, plan.first_stage_layers, f_auto)
    l = jnp.where(plan.last_stage_layers >= 0, plan.last_stage_layers, l_auto)
    explicit = (plan.first_stage_layers >= 0) | (plan.last_stage_layers >= 0)
    uneven = jnp.maximum(plan.layout_balanced, jnp.where(explicit, 1.0, 0.0))
    # middle stages: the rest, evenly (even layout: every stage the ceil)
    n_mid = P - 2.0
    rest = jnp.maximum(L - f - l, 0.0)
    mid_uneven = smooth.ceil(rest / jnp.maximum(n_mid, 1.0), t)
    mid = jnp.where(n_mid > 0.5, uneven * mid_uneven + (1.0 - uneven) * c, 0.0)
    # two stages (P = 2) with an uneven split: the first stage takes what the last leaves
    f = jnp.where((n_mid < 0.5) & (uneven > 0) & (plan.first_stage_layers < 0), L - l, f)

    def kinds(n, first_stage=False):
        """(dense, moe) of a stage of ``n`` layers: the first stage takes the leading dense
        layers, every other stage counts as many MoE layers as there are (worst case)."""
        if first_stage:
            dense = smooth.smin(n, l_dense, t) if structure.dense_first is not False else 0.0 * n
            return dense, n - dense
        moe = smooth.smin(n, l_moe, t) if structure.moe is not False else 0.0 * n
        return n - moe, moe

    fd, fm = kinds(f, first_stage=True)
    md, mm = kinds(mid)
    ld, lm = kinds(l)
    k = vpp - 1.0

    def middles(count):
        """(dense, moe) of ``count`` middle stages of one rank: the ``rest`` layers spread as
        evenly over the ranks as over the stages, ``ceil(count rest / (P - 2))``, in every
        layout: a rank need not hold the largest middle stage ``count`` times over (Megatron's
        split with the extras on the earlier stages, as the simulator lays it out and the
        Megatron export writes it, puts the larger stages on different ranks). Where
        ``P`` divides the layers this is ``count`` times the stage (round 14; until then the
        even layout counted every middle stage of a rank at the largest, up to 1.6x the
        simulator's step on 56 layers over 48 stages, docs/simulator.md D17)."""
        spread = smooth.ceil(count * rest / jnp.maximum(n_mid, 1.0), t)
        n = jnp.where(n_mid > 0.5, spread, 0.0)
        return kinds(n)
    pp, m = plan.pp, microbatches
    single = jnp.where(plan.pp > 1.5, 0.0, 1.0)        # pp = 1: one rank holds both ends
    # micro-batches in flight (module docstring), smooth min with m
    g = group(plan, m, t)
    chunks = lambda r: 2.0 * (pp - r - 1.0) + (vpp - 1.0) * g + 1.0  # noqa: E731
    inter = vpp > 1.5

    def flight(r, plain):
        f1 = smooth.smin(m, jnp.maximum(plain, 1.0), t)
        fi = smooth.smin(m * vpp, jnp.maximum(chunks(r), 1.0), t) / vpp
        one_f = jnp.where(inter, fi, f1)
        return one_f + dual * (pp + 1.0 - one_f)

    per_mb = 1.0 - 0.5 * dual
    # DualPipe: rank 0 holds stage 0 and stage pp - 1; a middle rank two middle stages
    both = jnp.maximum(dual, single)

    def load(dense, moe, **kw):
        """A rank's load with its MoE layers capped at the model's (stages counted worst
        case can together claim more)."""
        total = dense + moe
        moe = smooth.smin(moe, l_moe, t) if structure.moe is not False else moe
        return RankLoad(dense=total - moe, moe=moe, per_mb=per_mb, **kw)

    kd, km = middles(k)
    rd, rm = middles(k + 1.0 + dual)
    first = load(fd + kd + both * ld, fm + km + both * lm, embedding=1.0, head=both,
                 in_flight=flight(0.0, pp))
    mid_rank = load(rd, rm, embedding=0.0, head=0.0, in_flight=flight(1.0, pp - 1.0))
    last = load(kd + ld + dual * fd, km + lm + dual * fm, embedding=dual, head=1.0,
                in_flight=flight(pp - 1.0, 1.0))
    # ranks that do not exist stand in for one that does (pp < 3: no middle; pp = 1: one)
    has_mid = pp > 2.5
    mid_rank = pick(has_mid, mid_rank, last)
    last = pick(plan.pp > 1.5, last, first)
    chunk0 = RankLoad(dense=fd, moe=fm, embedding=1.0, head=single, per_mb=per_mb,
                      in_flight=1.0)
    chunk_mid = RankLoad(dense=md, moe=mm, embedding=0.0, head=0.0, per_mb=per_mb,
                         in_flight=1.0)
    return Layout(first, mid_rank, last, f, mid, l, chunk0, chunk_mid)


def pick(cond, a: RankLoad, b: RankLoad) -> RankLoad:
    """``a`` where ``cond`` else ``b``, field by field."""
    return RankLoad(*(jnp.where(cond, getattr(a, f.name), getattr(b, f.name))
                      for f in dataclasses.fields(RankLoad)))


def average(model: Model, plan: Plan, structure: Structure) -> RankLoad:
    """The average pipeline rank: ``1 / pp`` of every layer, of the embedding and of the
    output layer (the pipeline's fill and drain, :mod:`cpo_opt.model.step`)."""
    l_moe = transformer.moe_layers(model, structure)
    share = 1.0 / plan.pp
    return RankLoad(dense=(model.layers - l_moe) * share, moe=l_moe * share, embedding=share,
                    head=share, per_mb=1.0, in_flight=1.0)

"""Pipeline layouts for the simulator: which layers, embedding and head each stage holds.

A layout is a tuple of :class:`Stage` over the virtual stages ``c = 0 .. S - 1``:

* 1F1B / interleaved 1F1B (Megatron-Core): ``S = pp vpp`` virtual stages, stage ``c`` on
  pipeline rank ``c mod pp`` (model chunk ``c // pp`` of that rank); a micro-batch runs
  through stages ``0, 1, .., S - 1`` in order.
* DualPipe (deepseek-ai/DualPipe, ``DualPipe.step``): ``S = pp`` stages, rank ``r`` holds
  stage ``r`` (its module 0: the micro-batches entering at rank 0 run through stage ``s`` on
  rank ``s``) and stage ``pp - 1 - r`` (its module 1: the micro-batches entering at rank
  ``pp - 1`` run through stage ``s`` on rank ``pp - 1 - s``).

:func:`megatron_layout` is the adapter used until the lead's host-side layout lands (round 4
design notes): Megatron's even split with the embedding on stage 0 and the output layer with
the loss on stage ``S - 1``. When ``L`` does not divide by ``S`` Megatron-Core refuses the
plan (``--decoder-first/last-pipeline-num-layers`` must then be given); the adapter spreads
the remainder like ``numpy.array_split``: the first ``L mod S`` stages hold ``ceil(L / S)``
layers, the others ``floor(L / S)`` (stated in docs/simulator.md). Explicit
``first_stage_layers`` / ``last_stage_layers`` (Megatron's
``--decoder-first-pipeline-num-layers`` / ``--decoder-last-pipeline-num-layers``) give the
first / last stage those counts and split the rest the same way. An MoE model's first
``dense_layers`` layers are dense (Kimi-K2 / DeepSeek-V3 ``first_k_dense_replace``).
"""

from __future__ import annotations

from typing import NamedTuple


class Stage(NamedTuple):
    """One virtual pipeline stage: its dense and MoE layer counts (in model order: the
    stage's dense layers come first) and whether it holds the embedding / the output
    layer with the loss."""

    dense: int
    moe: int
    embedding: bool
    head: bool

    @property
    def layers(self) -> int:
        return self.dense + self.moe


def split(total: int, parts: int) -> list[int]:
    """``total`` items over ``parts`` bins, the first ``total mod parts`` one larger."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def megatron_layout(layers: int, dense_layers: int, stages: int,
                    first: int | None = None, last: int | None = None) -> tuple[Stage, ...]:
    """Megatron's split of ``layers`` (the first ``dense_layers`` dense, the rest MoE; a
    dense model passes ``dense_layers = layers``) over ``stages`` virtual stages (module
    docstring); ``first`` / ``last``: explicit layer counts of the first / last stage."""
    if stages < 1 or layers < 1:
        raise ValueError(f"need layers >= 1 and stages >= 1, got {layers}, {stages}")
    if stages == 1:
        counts = [layers]
    else:
        f = first if first is not None else None
        la = last if last is not None else None
        rest_stages = stages - (f is not None) - (la is not None)
        rest = layers - (f or 0) - (la or 0)
        if rest < 0 or (rest_stages == 0 and rest != 0):
            raise ValueError(f"first/last stage layers {first}/{last} do not fit {layers} "
                             f"layers on {stages} stages")
        mid = split(rest, rest_stages) if rest_stages else []
        counts = ([f] if f is not None else []) + mid + ([la] if la is not None else [])
    out = []
    start = 0
    for c, n in enumerate(counts):
        dense = max(0, min(dense_layers, start + n) - start)
        out.append(Stage(dense=dense, moe=n - dense, embedding=(c == 0),
                         head=(c == stages - 1)))
        start += n
    return tuple(out)


def rank_of(stage: int, pp: int, dualpipe: bool = False, direction: int = 0) -> int:
    """Pipeline rank running virtual ``stage``: ``stage mod pp`` (Megatron interleaving);
    DualPipe: ``stage`` for the micro-batches entering at rank 0 (``direction 0``),
    ``pp - 1 - stage`` for those entering at rank ``pp - 1``."""
    if dualpipe:
        return stage if direction == 0 else pp - 1 - stage
    return stage % pp

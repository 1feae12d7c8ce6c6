"""The static structure of an evaluation: which blocks the traced program contains.

A :class:`Structure` is what changes the *program* that ``jit`` builds, as opposed to the
numbers flowing through it: whether the model has MoE layers, multi-head latent attention,
a low-rank query, shared experts, dense first layers, a gated FFN, tied embeddings, and
whether the plan runs in fp8 or with flash attention. It is a frozen, hashable dataclass so
that it can be a ``jax.jit`` static argument and the key of a cache of compiled functions:
every model (and system) with the same structure shares one compilation, and its numeric
leaves are ordinary traced arguments.

The formulas read it: :func:`cpo_opt.model.step.step_time` and the functions below it
(:func:`cpo_opt.model.dims.dims`, :mod:`cpo_opt.model.transformer`,
:func:`cpo_opt.model.layer_costs.blocks`, :func:`cpo_opt.model.memory.memory`) take
``structure=`` and build a block only when its field is ``True`` (the helpers of
:mod:`cpo_opt.model.switch` decide in Python). A field may also be ``None``: the choice is then
data, both blocks are built and blended per row by the leaf's value (:data:`DYNAMIC` has every
field ``None``: one program for any model, as calibration needs for its stacked cases of
different models). Values, not formulas, differ between the paths: the numbers are the same.

``structure=None`` (the default of every formula) means :func:`resolve`: each field is read
from the model and plan when that leaf is a concrete scalar (a host value, or a constant
closed over by a jitted function) and is ``None`` when it is traced or batched.

:func:`structure_of` reads a complete structure from a :class:`~cpo_opt.model.config.Model`
(host values) and the plan options. :meth:`Structure.pin` writes the values the structure
decides back into a model as Python floats (no longer needed by the formulas, which read the
structure; kept for callers that want a model whose deciding leaves are constants).

What it does not decide: counts of present blocks (``experts = 256`` vs ``8``), dimensions,
the system, the plan degrees. Those are data.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from cpo_opt.model.config import Model, replace


def _on(x) -> bool:
    return bool(float(np.asarray(x)) > 0.0)


@dataclasses.dataclass(frozen=True)
class Structure:
    """Which blocks the traced step-time program has (hashable; a ``jit`` static argument).

    Each field is ``True``/``False`` (the block is / is not in the program) or ``None``
    (decided per row by the data: both blocks built and blended).

    Attributes:
      moe: the model has routed experts (``experts > 0``).
      mla: multi-head latent attention (``mla == 1``); otherwise standard MHA/GQA.
      q_lora: MLA with a low-rank query (``q_lora_rank > 0``).
      shared_experts: MoE layers also run shared experts (``shared_experts > 0``).
      dense_first: some leading layers are dense in an MoE model (``dense_layers > 0``).
      gated: the FFN is gated (SwiGLU: three matrices instead of two).
      tied: input and output embeddings are tied.
      fp8: GEMMs run in fp8 (the plan's dtype), else bf16.
      flash: attention runs as a fused flash kernel, else materialized softmax.
    """

    moe: bool | None = False
    mla: bool | None = False
    q_lora: bool | None = False
    shared_experts: bool | None = False
    dense_first: bool | None = False
    gated: bool | None = False
    tied: bool | None = False
    fp8: bool | None = False
    flash: bool | None = True

    def pin(self, model: Model) -> Model:
        """``model`` with the leaves this structure decides replaced by Python floats.

        Flags (``mla``, ``gated_ffn``, ``tied_embeddings``) take 0.0/1.0; counts of absent
        blocks (``experts``, ``shared_experts``, ``dense_layers``, ``q_lora_rank``) take 0.0.
        Counts of present blocks stay as they are (traced under ``jit``): their value is data.
        """
        flags = {"mla": self.mla, "gated_ffn": self.gated, "tied_embeddings": self.tied}
        fields = {k: float(v) for k, v in flags.items() if v is not None}
        for name, on in (("experts", self.moe), ("q_lora_rank", self.q_lora),
                         ("shared_experts", self.shared_experts),
                         ("dense_layers", self.dense_first)):
            if on is False:
                fields[name] = 0.0
        return replace(model, **fields)

    def plan_switches(self) -> tuple[float, float]:
        """``(fp8, flash)`` as the Python numbers :func:`cpo_opt.search.lattice.to_plan` takes."""
        if self.fp8 is None or self.flash is None:
            raise ValueError("plan_switches: fp8/flash are data in this structure")
        return float(self.fp8), float(self.flash)


def structure_of(model: Model, fp8=0, flash=1) -> Structure:
    """The :class:`Structure` of ``model`` (host values, not tracers) with plan options
    ``fp8`` (0 bf16, 1 fp8) and ``flash`` (1 flash attention, 0 materialized)."""
    return Structure(
        moe=_on(model.experts),
        mla=_on(model.mla),
        q_lora=_on(model.q_lora_rank),
        shared_experts=_on(model.shared_experts),
        dense_first=_on(model.dense_layers),
        gated=_on(model.gated_ffn),
        tied=_on(model.tied_embeddings),
        fp8=_on(fp8),
        flash=_on(flash),
    )


DYNAMIC = Structure(*([None] * 9))
"""Every choice is data: one program (all blocks, blended per row) for any model and plan."""

MODEL_FIELDS = {"moe": "experts", "mla": "mla", "q_lora": "q_lora_rank",
                "shared_experts": "shared_experts", "dense_first": "dense_layers",
                "gated": "gated_ffn", "tied": "tied_embeddings"}
"""Structure field -> the :class:`Model` leaf whose ``> 0`` it is."""
PLAN_FIELDS = {"fp8": "fp8", "flash": "flash_attention"}
"""Structure field -> the :class:`~cpo_opt.model.config.Plan` leaf whose ``> 0`` it is."""


def _static(x) -> bool | None:
    """``x > 0`` when ``x`` is a concrete scalar (not a tracer, not batched), else ``None``."""
    if isinstance(x, jax.core.Tracer) or np.ndim(x) != 0:
        return None
    return _on(x)


def resolve(structure: Structure | None, model: Model, plan=None) -> Structure:
    """``structure`` itself, or when it is ``None`` the structure the values show: each field
    from its leaf (:data:`MODEL_FIELDS`, :data:`PLAN_FIELDS`) when that leaf is a concrete
    scalar, ``None`` (decided per row) when it is traced or batched or ``plan`` is absent."""
    if structure is not None:
        return structure
    fields = {f: _static(getattr(model, leaf)) for f, leaf in MODEL_FIELDS.items()}
    for f, leaf in PLAN_FIELDS.items():
        fields[f] = None if plan is None else _static(getattr(plan, leaf))
    return Structure(**fields)


def check(structure: Structure, model: Model, plan=None) -> None:
    """Raise ``ValueError`` when a field of ``structure`` contradicts a concrete leaf of
    ``model`` or ``plan`` (a structure is a promise about the values; traced leaves cannot be
    checked while tracing and are the caller's promise)."""
    pairs = [(f, getattr(model, leaf)) for f, leaf in MODEL_FIELDS.items()]
    if plan is not None:
        pairs += [(f, getattr(plan, leaf)) for f, leaf in PLAN_FIELDS.items()]
    for f, x in pairs:
        want, seen = getattr(structure, f), _static(x)
        if want is not None and seen is not None and want != seen:
            raise ValueError(f"structure.{f}={want} but the values say {seen} "
                             f"({float(np.asarray(x))!r})")


def structure_of_cases(model: Model, plan) -> Structure:
    """The structure that stacked host cases (every leaf an array with a leading case axis,
    as ``calibrate`` batches them) share: a field is ``True``/``False`` when every case
    agrees and ``None`` (blended per case) when they differ."""
    def common(x) -> bool | None:
        on = np.asarray(x) > 0.0
        return bool(on.all()) if on.all() or not on.any() else None

    fields = {f: common(getattr(model, leaf)) for f, leaf in MODEL_FIELDS.items()}
    fields.update({f: common(getattr(plan, leaf)) for f, leaf in PLAN_FIELDS.items()})
    return Structure(**fields)

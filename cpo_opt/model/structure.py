"""The static structure of an evaluation: which blocks the traced program contains.

A :class:`Structure` is what changes the *program* that ``jit`` builds, as opposed to the
numbers flowing through it: whether the model has MoE layers, multi-head latent attention,
a low-rank query, shared experts, dense first layers, a gated FFN, tied embeddings, and
whether the plan runs in fp8 or with flash attention. It is a frozen, hashable dataclass so
that it can be a ``jax.jit`` static argument and the key of a cache of compiled functions:
every model (and system) with the same structure shares one compilation, and its numeric
leaves are ordinary traced arguments.

:func:`structure_of` reads it from a :class:`~cpo_opt.model.config.Model` (host values) and the
plan options; :meth:`Structure.pin` writes the values the structure decides (flags, and the
counts that are zero when a block is absent) back into a model as Python floats. Inside a
traced function the formulas then see those leaves as known constants
(:func:`cpo_opt.model.switch.known`) and build only the blocks the structure has, while every
other leaf stays traced. A pinned model computes the same numbers as the unpinned one
(``pin`` only writes values the model already holds).

What it does not decide: counts of present blocks (``experts = 256`` vs ``8``), dimensions,
the system, the plan degrees. Those are data.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cpo_opt.model.config import Model, replace


def _on(x) -> bool:
    return bool(float(np.asarray(x)) > 0.0)


@dataclasses.dataclass(frozen=True)
class Structure:
    """Which blocks the traced step-time program has (hashable; a ``jit`` static argument).

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

    moe: bool = False
    mla: bool = False
    q_lora: bool = False
    shared_experts: bool = False
    dense_first: bool = False
    gated: bool = False
    tied: bool = False
    fp8: bool = False
    flash: bool = True

    def pin(self, model: Model) -> Model:
        """``model`` with the leaves this structure decides replaced by Python floats.

        Flags (``mla``, ``gated_ffn``, ``tied_embeddings``) take 0.0/1.0; counts of absent
        blocks (``experts``, ``shared_experts``, ``dense_layers``, ``q_lora_rank``) take 0.0.
        Counts of present blocks stay as they are (traced under ``jit``): their value is data.
        """
        fields = {"mla": float(self.mla), "gated_ffn": float(self.gated),
                  "tied_embeddings": float(self.tied)}
        if not self.moe:
            fields["experts"] = 0.0
        if not self.q_lora:
            fields["q_lora_rank"] = 0.0
        if not self.shared_experts:
            fields["shared_experts"] = 0.0
        if not self.dense_first:
            fields["dense_layers"] = 0.0
        return replace(model, **fields)

    def plan_switches(self) -> tuple[float, float]:
        """``(fp8, flash)`` as the Python numbers :func:`cpo_opt.search.lattice.to_plan` takes."""
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

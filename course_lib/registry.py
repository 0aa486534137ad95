"""What ``python -m course_lib.train`` can train: one explicit table.

Each row names a model, where its load-or-train function lives, what it needs trained
first and its profile section::

    Trainable("gan", "course_lib.gan:load_or_train_gan", after=("clip", "judge"),
              section="gan", sample="course_lib.gan:sample")

Functions are named as ``"module:attribute"`` and imported only when the command needs
them, so the model modules import nothing from here and this module imports no model
module at import time: the table sits above the layers it lists, and adding a generator
is one row. ``registered()`` returns every entry by name, its functions resolved.

Fields of an entry:

* ``name``          -- the checkpoint name and the command's argument (``gan``).
* ``load_or_train`` -- ``load_or_train(profile=None, *, retrain=False, **changes)`` returning
  ``(model, card)``, the contract of :mod:`course_lib.conditioning`.
* ``after``         -- names trained first (the command orders by these).
* ``section``       -- the profile section holding its sizes (``profile.gan``), if any.
* ``summarise``     -- optional ``summarise(model, card, profile) -> dict`` of key numbers
  (e.g. from ``metrics.evaluate``) for the command's summary table.
* ``reference``     -- optional changes to the section for ``--reference`` (longer budget,
  bigger sizes); a mapping, or the ``"module:attribute"`` of one.
* ``sample``        -- a generator's ``sample(model, captions, *, seed=0, noise=None, **options)``
  (the contract of :mod:`course_lib.conditioning`): the command grades it with
  ``metrics.evaluate`` (alignment, Fréchet distance, images/s) when it has no ``summarise``
  of its own, and ``tests/test_contract.py`` holds it to the contract. An entry with a
  ``sample`` is a *generator* (:func:`generators`).
* ``trains``        -- False for a generator made of others' checkpoints (unCLIP joins the
  prior and the decoder): the command trains and ships its parts, and grades it.
* ``prepare_reference`` -- ``prepare_reference(state_dict)`` changes a model's weights in
  place before it is shipped as a reference (CLIP zeroes the token rows the world never uses).
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Trainable", "TABLE", "register", "registered", "generators", "in_order", "UnknownModelError"]

class UnknownModelError(KeyError):
    """A name the training command does not know (the known ones are listed)."""

    def __str__(self):   # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


@dataclass(frozen=True)
class Trainable:
    name: str
    load_or_train: Callable[..., Any] | str
    after: tuple[str, ...] = ()
    section: str | None = None
    summarise: Callable[..., Mapping[str, Any]] | str | None = None
    reference: Mapping[str, Any] | str = field(default_factory=dict)
    sample: Callable[..., Any] | str | None = None
    prepare_reference: Callable[..., Any] | str | None = None
    trains: bool = True

    def resolved(self) -> Trainable:
        """The entry with every ``"module:attribute"`` imported."""
        changes = {k: _resolve(getattr(self, k)) for k in
                   ("load_or_train", "summarise", "reference", "sample", "prepare_reference")}
        changes["reference"] = dict(changes["reference"] or {})
        return dataclasses.replace(self, **changes)


def _resolve(value):
    if not isinstance(value, str):
        return value
    module, _, attribute = value.partition(":")
    return getattr(importlib.import_module(module), attribute)


#: Every model the training command knows, in the course's order. The references' budgets:
#: the cpu diffusion model and unCLIP decoder trained ~5-6x longer than their notebooks' runs,
#: the prior twice as long (it meets its targets in the notebook already, but must be trained
#: on the reference CLIP).
TABLE: tuple[Trainable, ...] = (
    Trainable("clip", "course_lib.clip:load_or_train_clip", section="clip",
              prepare_reference="course_lib.clip:keep_world_tokens"),
    Trainable("judge", "course_lib.metrics:load_or_train_judge", section="judge"),
    Trainable("gan", "course_lib.gan:load_or_train_gan", after=("clip", "judge"), section="gan",
              sample="course_lib.gan:sample"),
    Trainable("galip", "course_lib.galip:load_or_train_galip", after=("clip", "judge"), section="galip",
              sample="course_lib.galip:sample"),
    Trainable("autoencoder", "course_lib.vae:load_or_train_autoencoder", section="autoencoder"),
    Trainable("vae", "course_lib.vae:load_or_train_vae", after=("clip", "judge"), section="vae",
              sample="course_lib.vae:sample"),
    Trainable("diffusion", "course_lib.diffusion:load_or_train_diffusion",
              after=("clip", "judge", "autoencoder"), section="diffusion",
              sample="course_lib.diffusion:sample", reference="course_lib.diffusion:REFERENCE"),
    Trainable("unclip-prior", "course_lib.unclip:load_or_train_prior", after=("clip",), section="prior",
              reference={"steps": 600}),
    Trainable("unclip-prior-mlp", "course_lib.unclip:load_or_train_mlp_prior", after=("clip",),
              section="prior"),
    Trainable("unclip-decoder", "course_lib.unclip:load_or_train_decoder",
              after=("clip", "judge", "autoencoder"), section="decoder",
              reference={"steps": 3_000, "max_minutes": 60.0}, sample="course_lib.unclip:sample_no_prior"),
    Trainable("unclip", "course_lib.unclip:load_or_train_unclip", after=("unclip-prior", "unclip-decoder"),
              sample="course_lib.unclip:sample", trains=False),
)

_EXTRA: dict[str, Trainable] = {}


def register(name: str, load_or_train: Callable[..., Any] | str, *, after=(), section: str | None = None,
             summarise=None, reference: Mapping[str, Any] | str | None = None,
             sample: Callable[..., Any] | str | None = None,
             prepare_reference: Callable[..., Any] | str | None = None, trains: bool = True) -> Trainable:
    """Add a model beside the table (e.g. one of your own, in a script): the command then
    trains it like the course's. A name of the table is replaced."""
    entry = Trainable(name, load_or_train, tuple(after), section, summarise, reference or {},
                      sample, prepare_reference, trains)
    _EXTRA[name] = entry
    return entry


def registered() -> dict[str, Trainable]:
    """Every model by name: the table, then any :func:`register`-ed ones, functions imported."""
    entries = {e.name: e for e in TABLE} | _EXTRA
    return {name: entry.resolved() for name, entry in entries.items()}


def generators() -> dict[str, Trainable]:
    """The registered entries that make images from captions (those with a ``sample``)."""
    return {name: entry for name, entry in registered().items() if entry.sample is not None}


def in_order(names=None) -> list[Trainable]:
    """The entries for ``names`` (default: all) and what they need, dependencies first.

    Raises:
        UnknownModelError: a name no module registered.
    """
    entries = registered()
    wanted = list(entries) if names is None or names == "all" or list(names) == ["all"] else list(names)
    order: list[Trainable] = []

    def visit(name: str, chain: tuple[str, ...]):
        if name not in entries:
            raise UnknownModelError(
                f"Unknown model {name!r}. Known: {', '.join(sorted(entries))} (or 'all').")
        if name in chain:
            raise ValueError(f"Dependency cycle: {' -> '.join(chain + (name,))}")
        if any(e.name == name for e in order):
            return
        for dep in entries[name].after:
            visit(dep, chain + (name,))
        order.append(entries[name])

    for name in wanted:
        visit(name, ())
    return order

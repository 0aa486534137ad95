"""What ``python -m course_lib.train`` can train: every model registers itself here.

A method module ends with one call::

    registry.register("gan", load_or_train_gan, after=("clip", "judge"), section="gan")

so the training command trains it in dependency order, and adding a generator adds no
special case to the command. ``registered()`` imports the course's modules (which run
their ``register`` calls) and returns every entry by name.

Fields of an entry:

* ``name``          -- the checkpoint name and the command's argument (``gan``).
* ``load_or_train`` -- ``load_or_train(profile=None, *, retrain=False, **changes)``; returns
  ``(model, card)`` or a model with a ``card`` attribute.
* ``after``         -- names trained first (the command orders by these).
* ``section``       -- the profile section holding its sizes (``profile.gan``), if any.
* ``summarise``     -- optional ``summarise(model, card, profile) -> dict`` of key numbers
  (e.g. from ``metrics.evaluate``) for the command's summary table.
* ``reference``     -- optional changes to the section for ``--reference`` (longer budget,
  bigger sizes), declared next to the profile section.
* ``sample``        -- a generator's ``sample(model, captions, *, seed)``: the command grades
  it with ``metrics.evaluate`` (alignment, Fréchet distance, images/s) when it has no
  ``summarise`` of its own.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Trainable", "register", "registered", "in_order", "UnknownModelError"]

#: Modules of course_lib that never register a model (or must not be imported for it).
_SKIP = {"registry", "train", "run_course", "pytest_plugin", "kernel", "pages"}


class UnknownModelError(KeyError):
    """A name the training command does not know (the known ones are listed)."""

    def __str__(self):   # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


@dataclass(frozen=True)
class Trainable:
    name: str
    load_or_train: Callable[..., Any]
    after: tuple[str, ...] = ()
    section: str | None = None
    summarise: Callable[..., Mapping[str, Any]] | None = None
    reference: Mapping[str, Any] = field(default_factory=dict)
    sample: Callable[..., Any] | None = None
    #: ``prepare_reference(state_dict)``: changes a model's weights in place before it is
    #: shipped as a reference (e.g. CLIP zeroes the token rows the world never uses).
    prepare_reference: Callable[..., Any] | None = None


_REGISTRY: dict[str, Trainable] = {}


def register(name: str, load_or_train: Callable[..., Any], *, after=(), section: str | None = None,
             summarise=None, reference: Mapping[str, Any] | None = None,
             sample: Callable[..., Any] | None = None,
             prepare_reference: Callable[..., Any] | None = None) -> Trainable:
    """Register a model for the training command (idempotent: a module reloaded re-registers)."""
    entry = Trainable(name, load_or_train, tuple(after), section, summarise, dict(reference or {}),
                      sample, prepare_reference)
    _REGISTRY[name] = entry
    return entry


def _import_all() -> None:
    import course_lib
    for info in pkgutil.iter_modules(course_lib.__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"course_lib.{info.name}")


def registered() -> dict[str, Trainable]:
    """Every registered model by name (importing the course's modules first)."""
    _import_all()
    return dict(_REGISTRY)


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

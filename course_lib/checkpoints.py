"""Checkpoints: safetensors weights plus a JSON card, written atomically.

A checkpoint is ONE ``.safetensors`` file. Its header carries the *card*, a
small JSON document (model config, profile, metrics, library versions, date),
so weights and card can never drift apart. A human-readable copy of the card
is written beside it as ``<name>.json``.

Why safetensors and not ``torch.save``: a ``.pt`` file is a pickle, and
unpickling a file runs code from whoever wrote it. The course never unpickles
anything, so a checkpoint handed round a workshop room is safe to open.

Writes are atomic: the file is written to ``<name>.safetensors.tmp`` and then
renamed over the old one (``os.replace``), so a run killed mid-save leaves the
previous checkpoint intact.

:func:`load_or_train` is the pattern the notebooks use (after the UvA deep
learning notebooks): load a matching checkpoint when there is one, otherwise
train and save. Where it looks, in order:

1. ``data/checkpoints/<profile>/<name>.safetensors`` -- trained on this machine;
2. ``data/shipped/<name>.safetensors`` -- trained once by an instructor (usually in
   the gpu profile) and handed to learners; used when the profile allows it
   (``Profile.use_shipped_checkpoints``). Its config may differ from the local
   profile's (a bigger model): the model is then built from the card's config.
   A *course reference* there (its card has a ``reference`` entry: committed with the
   course, made by ``python -m course_lib.train <name> --reference``) is loaded only
   inside ``use("reference")``: it stands beside the learner's own run, never in its place.

A local checkpoint whose training its time budget stopped short of its steps (a
busy CPU) is not final: its card says so (``card["training"]``), its resumable
state is kept beside it, and the next :func:`load_or_train` continues training
toward the step target (one printed line says so) instead of loading it for ever.

Explained in notebook 00, section "Checkpoints: train once, load everywhere".
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import json
import os
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import paths

__all__ = ["CheckpointError", "CheckpointMismatchError", "NotACourseCheckpointError",
           "use", "current_source", "reference_path", "describe_reference", "save_checkpoint", "load_checkpoint",
           "variant_name", "read_card", "save_model", "load_model", "load_or_train", "checkpoint_path",
           "find_checkpoint", "flatten_state", "unflatten_state", "library_versions",
           "config_diff", "shortened_note"]

SUFFIX = ".safetensors"
CARD_KEY = "course_card"   # the key of the card inside the safetensors header


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a course checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the model or config it is being loaded into."""


class NotACourseCheckpointError(CheckpointError):
    """A readable safetensors file without a course card (e.g. open_clip weights)."""


# ----------------------------------------------------------------------------- own or reference

#: Which checkpoint :func:`load_or_train` uses: "auto", "own" or "reference" (see :func:`use`).
_SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("course_checkpoint_source", default="auto")
SOURCES = ("auto", "own", "reference")


@contextlib.contextmanager
def use(source: str):
    """Choose, for the calls inside the ``with`` block, which checkpoints are loaded::

        with checkpoints.use("own"):        # my own run: train here if there is none
            mine, _ = gan.load_or_train_gan()
        with checkpoints.use("reference"):  # the course's reference from data/shipped/
            ref, _ = gan.load_or_train_gan()

    * ``"auto"`` (the default): this machine's checkpoint; else, where the profile allows
      it (cpu, gpu), an instructor's shipped one from ``data/shipped/``; else train.
      (Course references there are not used: the learner trains their own run.)
    * ``"own"``: this machine's checkpoint, or train; shipped files are ignored.
    * ``"reference"``: only the shipped file (an error naming the command that makes it
      when there is none). Dependencies loaded inside the block (the CLIP a generator was
      trained on) come from ``data/shipped/`` too, so the chain stays consistent.
    """
    if source not in SOURCES:
        raise ValueError(f"checkpoints.use({source!r}): choose one of {', '.join(map(repr, SOURCES))}.")
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def current_source() -> str:
    """The source chosen by the innermost :func:`use` block ("auto" outside any)."""
    return _SOURCE.get()


def reference_path(name: str) -> Path:
    """Where the shipped (reference or bundled) checkpoint ``name`` lives."""
    checkpoint_path(name, directory=paths.SHIPPED_DIR)      # validates the name
    return paths.SHIPPED_DIR / f"{name}{SUFFIX}"


def regenerate_command(name: str) -> str:
    return f"python -m course_lib.train {name} --reference"


def describe_reference(card: Mapping, name: str) -> str:
    """One line saying what a shipped checkpoint is (from its card)."""
    ref = card.get("reference") if isinstance(card.get("reference"), Mapping) else None
    if ref:
        minutes = ref.get("minutes")
        took = f"trained {minutes:.0f} min" if isinstance(minutes, (int, float)) else "trained"
        return (f"Loaded the course reference '{name}' ({took} on {ref.get('device', '?')}, "
                f"{ref.get('steps', '?')} steps, commit {str(ref.get('commit', '?'))[:7]}).")
    return (f"Loaded the shipped checkpoint '{name}' from data/shipped/ (profile "
            f"{card.get('profile', '?')}, {str(card.get('date', '?'))[:10]}).")


# ----------------------------------------------------------------------------- low level


def library_versions() -> dict[str, str]:
    """Versions of the libraries a checkpoint depends on (stored in its card)."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for module in ("open_clip", "diffusers", "accelerate", "safetensors", "numpy"):
        try:
            mod = __import__(module)
            versions[module] = getattr(mod, "__version__", "?")
        except ImportError:
            pass
    return versions


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:      # make sure the bytes are on disk before the rename
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: str | Path, tensors: Mapping[str, torch.Tensor], card: Mapping[str, Any]) -> Path:
    """Write tensors and a JSON card to ``path`` atomically.

    Args:
        path: the ``.safetensors`` file to write (its folder is created).
        tensors: name -> tensor. Tensors are copied to CPU and made contiguous;
            tensors that share memory are cloned (safetensors refuses shared storage).
        card: JSON-serialisable metadata. ``date`` and ``versions`` are added.

    Returns the path. A ``<stem>.json`` copy of the card is written beside it.
    """
    from safetensors.torch import save_file

    path = Path(path)
    card = dict(card)
    card.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    card.setdefault("versions", library_versions())
    try:
        card_json = json.dumps(card, sort_keys=True, default=_json_default)
    except TypeError as e:
        raise TypeError(f"The checkpoint card for {path.name} is not JSON-serialisable: {e}") from e
    seen: set[int] = set()
    clean: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"save_checkpoint: {name!r} is a {type(tensor).__name__}, not a tensor")
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        clean[name] = t
    _atomic_write(path, lambda tmp: save_file(clean, str(tmp), metadata={CARD_KEY: card_json}))
    _atomic_write(path.with_suffix(".json"),
                  lambda tmp: tmp.write_text(json.dumps(card, indent=2, sort_keys=True,
                                                        default=_json_default) + "\n"))
    return path


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if hasattr(obj, "item"):           # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _open_error(path: Path, err: Exception) -> CheckpointError:
    size = path.stat().st_size if path.exists() else 0
    return CheckpointError(
        f"Checkpoint {path} ({size} bytes) cannot be read: it is truncated, corrupt or not a "
        f"safetensors file ({type(err).__name__}: {err}). Fix: delete it and train again, or copy "
        "the file again from its source (an interrupted copy or download leaves a truncated file).")


def read_card(path: str | Path) -> dict:
    """The JSON card of a checkpoint, read from its header (no tensors loaded)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error type for bad headers
        raise _open_error(path, e) from e
    if CARD_KEY not in meta:
        raise NotACourseCheckpointError(
            f"{path} is a safetensors file but not a course checkpoint (no card in its header). "
            "Load it with safetensors.torch.load_file instead.")
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"The card inside {path} is not valid JSON ({e}). Train again.") from e
    if not isinstance(card, dict):
        raise CheckpointError(f"The card inside {path} is JSON but not an object (it is a "
                              f"{type(card).__name__}): the file was not written by the course, or "
                              "was altered. Delete it and train again.")
    for key in ("config", "metrics"):
        if key in card and not isinstance(card[key], dict):
            raise CheckpointError(f"The card inside {path} has a '{key}' that is not an object (it is a "
                                  f"{type(card[key]).__name__}): the file was not written by the course, or "
                                  "was altered. Delete it and train again.")
    return card


def load_checkpoint(path: str | Path,
                    device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``(tensors, card)`` from a checkpoint. Never unpickles anything.

    Raises:
        CheckpointError: missing, truncated or corrupt file, with the fix in the message.
    """
    from safetensors.torch import load_file

    path = Path(path)
    card = read_card(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as e:
        raise _open_error(path, e) from e
    if card.get(PACKED_KEY):
        tensors = unpack_zero_rows(tensors, card[PACKED_KEY], path)
    return tensors, card


#: The card entry naming the tensors stored without their all-zero rows.
PACKED_KEY = "packed_rows"
_ROWS = ".nonzero_rows"


def pack_zero_rows(tensors: Mapping[str, torch.Tensor], *, min_numel: int = 1 << 16
                   ) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """Store 2-D float tensors that are mostly all-zero rows as their other rows plus
    those rows' indices (``<name>.nonzero_rows``); lossless. Returns ``(tensors, packed)``
    where ``packed`` (name -> full shape) goes into the card under :data:`PACKED_KEY`.

    safetensors has no sparse format, and a shipped CLIP's token table is 49,408 rows of
    which the course's world uses ~90 (see ``clip.keep_world_tokens``)."""
    out: dict[str, torch.Tensor] = {}
    packed: dict[str, list[int]] = {}
    for name, t in tensors.items():
        if t.is_floating_point() and t.ndim == 2 and t.numel() >= min_numel:
            rows = t.detach().ne(0).any(dim=1).nonzero().flatten()
            if len(rows) <= t.shape[0] // 2:
                out[name] = t[rows].contiguous()
                out[name + _ROWS] = rows.to(torch.int64)
                packed[name] = list(t.shape)
                continue
        out[name] = t
    return out, packed


def unpack_zero_rows(tensors: Mapping[str, torch.Tensor], packed: Mapping[str, Any],
                     path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """The inverse of :func:`pack_zero_rows` (the full tensors, zero rows back in place)."""
    out = dict(tensors)
    for name, shape in packed.items():
        rows = out.pop(name + _ROWS, None)
        values = out.get(name)
        if rows is None or values is None or values.shape[0] != rows.shape[0] \
                or len(shape) != 2 or values.shape[1] != shape[1]:
            raise CheckpointError(f"Checkpoint {path}: its card says {name!r} is stored without "
                                  "its zero rows, but the stored rows do not fit. The file was "
                                  "altered or cut: copy it again, or regenerate it.")
        full = torch.zeros(tuple(shape), dtype=values.dtype, device=values.device)
        full[rows.long()] = values
        out[name] = full
    return out


# ----------------------------------------------------------------------------- nested state


def flatten_state(state: Any, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (e.g. ``optimizer.state_dict()``) into tensors and JSON.

    Tensors go into a flat dict under dotted keys starting with ``prefix``; the
    rest stays as a JSON-able tree where each tensor is replaced by
    ``{"__tensor__": key}``. :func:`unflatten_state` reverses it. This is how the
    course stores optimizer and RNG state in safetensors without pickle.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj, key):
        if isinstance(obj, torch.Tensor):
            tensors[key] = obj
            return {"__tensor__": key}
        if isinstance(obj, Mapping):
            # JSON keys are strings: remember int keys (optimizer state uses them)
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return {"__list__": [walk(v, f"{key}.{i}") for i, v in enumerate(obj)],
                    "tuple": isinstance(obj, tuple)}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"flatten_state: cannot store {type(obj).__name__} at {key}")

    return tensors, walk(state, prefix)


def unflatten_state(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__dict__" in tree:
            return {k: unflatten_state(v, tensors) for k, v in tree["__dict__"]}
        if "__list__" in tree:
            items = [unflatten_state(v, tensors) for v in tree["__list__"]]
            return tuple(items) if tree.get("tuple") else items
    return tree


# ----------------------------------------------------------------------------- models


#: Keys older course versions wrote into model configs that no model reads any more (how a
#: notebook measures, or a switch that was removed): a card that still has one loads, the key
#: is ignored. Only keys the requested config does not have are ignored.
RETIRED_CONFIG_KEYS = frozenset({"ablation_steps", "compare_steps", "compare_minutes", "coord_channels"})


def config_diff(expected: Mapping, found: Mapping) -> list[str]:
    """Human-readable differences between two configs (``[]`` when equal; a retired key
    found only in the checkpoint, :data:`RETIRED_CONFIG_KEYS`, is no difference)."""
    lines = []
    found = {k: v for k, v in found.items() if not (k in RETIRED_CONFIG_KEYS and k not in expected)}
    for key in sorted(set(expected) | set(found), key=str):
        a, b = expected.get(key, "<missing>"), found.get(key, "<missing>")
        if _jsonable(a) != _jsonable(b):
            lines.append(f"{key}: checkpoint has {b!r}, this model wants {a!r}")
    return lines


def _jsonable(value):
    return json.loads(json.dumps(value, sort_keys=True, default=_json_default))


def save_model(path: str | Path, model: nn.Module, *, config: Mapping | None = None,
               profile: Any = None, metrics: Mapping | None = None, **card_extra) -> Path:
    """Save a module's weights (``state_dict``) with a card.

    Args:
        model: the module; buffers are saved too.
        config: the arguments that rebuild the model (stored and checked on load).
        profile: the :class:`~course_lib.profiles.Profile` (or its name) it was trained in.
        metrics: measured numbers worth keeping (loss, accuracy, minutes of training).
    """
    card = {"kind": "model", "model_class": type(model).__name__, "config": dict(config or {}),
            "metrics": dict(metrics or {}), **card_extra}
    if profile is not None:
        card["profile"] = getattr(profile, "name", profile)
    return save_checkpoint(path, model.state_dict(), card)


def load_model(path: str | Path, model: nn.Module, *, config: Mapping | None = None,
               device: str | torch.device | None = None) -> dict:
    """Load weights saved by :func:`save_model` into ``model``; returns the card.

    Raises:
        CheckpointMismatchError: the stored config differs from ``config``, or the
            weights do not fit the model (names and shapes are listed).
        CheckpointError: the file is missing, truncated or corrupt.
    """
    path = Path(path)
    card = read_card(path)
    if config is not None:
        diff = config_diff(dict(config), card.get("config", {}))
        if diff:
            raise CheckpointMismatchError(
                f"Checkpoint {path} was trained with a different config:\n  " + "\n  ".join(diff)
                + "\nFix: build the model from the checkpoint's config (read_card(path)['config']), "
                  "retrain (load_or_train(..., retrain=True)), or delete the file.")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tensors, _ = load_checkpoint(path, device=device)
    _load_state_strict(model, tensors, path)
    return card


def _load_state_strict(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def head(items):
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {head(missing)}")
        if unexpected:
            parts.append(f"not in the model: {head(unexpected)}")
        if shapes:
            parts.append(f"different shapes: {head(shapes)}")
        raise CheckpointMismatchError(
            f"Checkpoint {path} does not fit {type(model).__name__}:\n  " + "\n  ".join(parts)
            + "\nFix: build the model with the config stored in the checkpoint's card, or retrain.")
    model.load_state_dict(dict(tensors), strict=True)


# ----------------------------------------------------------------------------- load or train


def checkpoint_path(name: str, profile: Any = None, directory: str | Path | None = None) -> Path:
    """Where a checkpoint called ``name`` lives for a profile:
    ``data/checkpoints/<profile>/<name>.safetensors`` (``<profile>-seed<N>/`` for another
    seed, :attr:`Profile.checkpoint_folder`), or ``directory/<name>.safetensors``."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"Checkpoint name {name!r}: use a plain name such as 'clip' (no slashes).")
    if directory is None:
        from .profiles import get_profile
        directory = paths.CHECKPOINT_DIR / get_profile(profile).checkpoint_folder
    return Path(directory) / f"{name}{SUFFIX}"


def find_checkpoint(name: str, profile: Any = None) -> Path | None:
    """The checkpoint :func:`load_or_train` would load, or None (see module docstring)."""
    from .profiles import get_profile
    profile = get_profile(profile)
    source = current_source()
    local = checkpoint_path(name, profile)
    shipped = reference_path(name)
    if source == "reference":
        if not profile.use_shipped_checkpoints:
            raise CheckpointError(
                f"The {profile.name} profile never uses shipped checkpoints (CI trains every "
                f"model), so there is no reference '{name}' to load here. Fix: use the cpu or "
                "gpu profile, or leave out checkpoints.use('reference').")
        if not shipped.exists():
            raise CheckpointError(
                f"No course reference '{name}' in {_short(paths.SHIPPED_DIR)}/. Fix: make it "
                f"with `{regenerate_command(name)}`, or unpack an instructor's bundle there.")
        return shipped
    if local.exists():
        return local
    if source == "auto" and profile.use_shipped_checkpoints and shipped.exists() \
            and not _is_course_reference(shipped):
        return shipped
    return None


def _is_course_reference(path: Path) -> bool:
    """A course reference (committed to data/shipped/ by ``--reference``), as opposed to an
    instructor's bundle: loaded only inside ``use("reference")``, beside the learner's run."""
    try:
        return "reference" in read_card(path)
    except CheckpointError:
        return False          # an unreadable file: load_or_train names the problem when it loads


def load_or_train(name: str, *, config: Mapping, build: Callable[[dict], nn.Module],
                  train: Callable[[nn.Module, Path], Mapping | None], profile: Any = None,
                  retrain: bool = False, device: str | torch.device | None = None,
                  verbose: bool = True) -> tuple[nn.Module, dict]:
    """Load a trained model when a matching checkpoint exists, else train and save it.

    Args:
        name: checkpoint name, e.g. ``"clip"``.
        config: JSON-able dict that rebuilds the model; stored in the card and compared on load.
        build: ``build(config) -> nn.Module`` makes an untrained model.
        train: ``train(model, resume_path) -> metrics`` trains it in place. ``resume_path``
            is where the training loop keeps its resumable state
            (``<name>.resume.safetensors``), so an interrupted run continues.
        profile: the profile (default: the active one).
        retrain: train even if a checkpoint exists (it is replaced when training ends).
        device: where the returned model lives (default: course_lib.runtime.get_device()).

    Returns:
        ``(model, card)``; ``card["source"]`` says "loaded", "shipped" or "trained".
        A run stopped by its time budget before its step target is saved with
        ``card["training"] = {"stopped_by": "time", "step": ..., "steps": ...}`` and its
        resume state is kept; the next call continues it (source "trained" again).

    Raises:
        CheckpointMismatchError: a local checkpoint exists but its config differs
            (so an instructor's checkpoint is never overwritten by accident).
    """
    from .profiles import get_profile
    from .runtime import get_device

    profile = get_profile(profile)
    device = get_device(device)
    config = _jsonable(dict(config))
    local = checkpoint_path(name, profile)
    resume = local.with_name(f"{name}.resume{SUFFIX}")
    found = None if retrain else find_checkpoint(name, profile)
    continuing = None
    if found is not None:
        card = read_card(found)
        shipped = found != local
        use_config = card.get("config", {}) if shipped else config
        if not shipped and config_diff(config, card.get("config", {})):
            diff = config_diff(config, card.get("config", {}))
            raise CheckpointMismatchError(
                f"Checkpoint {found} exists but was trained with a different config:\n  "
                + "\n  ".join(diff) + "\nFix: pass retrain=True to replace it, use another name, "
                "or delete the file.")
        continuing = None if shipped else _unfinished(card, resume)
        other = _dependency_mismatch(config, card.get("config", {})) if shipped else None
        if other and current_source() == "auto":
            # e.g. a shipped generator trained on the course's reference CLIP, while this
            # learner trained their own CLIP: the two do not fit together
            if verbose:
                print(f"A shipped '{name}' exists but was trained on another {other} than yours: "
                      f"training your own. (Load the shipped one with its own {other} inside "
                      "`with course_lib.checkpoints.use('reference'):`.)")
            found, shipped = None, False
        elif other:
            raise CheckpointMismatchError(
                f"The shipped '{name}' was trained on another {other} than the one loaded with it. "
                f"Fix: regenerate the references together with `{regenerate_command(name)}`.")
    if found is not None and continuing is None:
        if shipped:
            model, card = _load_shipped(name, found, config, build, device)
        else:
            model = build(dict(use_config)).to(device)
            card = load_model(found, model, config=use_config)
        card["source"] = "shipped" if shipped else "loaded"
        if verbose and shipped:
            print(describe_reference(card, name))
        elif verbose:
            minutes = card.get("metrics", {}).get("train_minutes")
            took = f", trained {minutes:.1f} min" if isinstance(minutes, (int, float)) else ""
            print(f"Loaded checkpoint '{name}' from {_short(found)} "
                  f"(profile {card.get('profile', '?')}{took}, {card.get('date', '?')[:10]}).")
            note = shortened_note(card, name)
            if note:
                print(note)
        model.eval()
        return model, card
    model = build(dict(config)).to(device)
    if continuing is not None and verbose:
        print(f"Checkpoint '{name}' was stopped by its time budget at step {continuing['step']} "
              f"of {continuing['steps']}: training continues toward {continuing['steps']} "
              f"(pass retrain=True to start afresh).")
    elif continuing is None:
        if retrain and _stopped_short(resume):   # retrain: from scratch, not from a stopped run
            resume.unlink()
            resume.with_suffix(".json").unlink(missing_ok=True)
        if verbose:
            print(f"No checkpoint '{name}' for profile {profile.name}: training "
                  f"(it will be saved to {_short(local)}).")
    metrics = train(model, resume) or {}
    stopped = _stopped_short(resume)
    extra = {"training": stopped} if stopped else {}
    # Under `accelerate launch` / torchrun every process trained the same weights: one writes.
    from .runtime import is_main_process, wait_for_everyone
    if is_main_process():
        save_model(local, model, config=config, profile=profile, metrics=metrics, **extra)
        if resume.exists() and not stopped:   # training finished: its resumable state is no longer needed
            resume.unlink()
            resume.with_suffix(".json").unlink(missing_ok=True)
    wait_for_everyone()
    card = read_card(local)
    card["source"] = "trained"
    model.eval()
    return model, card


def _dependency_mismatch(config: Mapping, found: Mapping) -> str | None:
    """The name of a model this config depends on (an entry with a ``fingerprint``, such
    as the CLIP of a generator) whose weights differ from those ``found`` was trained with."""
    for key, value in config.items():
        if isinstance(value, Mapping) and "fingerprint" in value:
            other = found.get(key)
            if not isinstance(other, Mapping) or other.get("fingerprint") != value["fingerprint"]:
                return str(key).upper() if key == "clip" else str(key)
    return None


def _load_shipped(name: str, path: Path, config: Mapping, build, device) -> tuple[nn.Module, dict]:
    """Build a model from a shipped checkpoint's own config and load it (fp16 weights are
    cast to the model's dtype). A file that no longer fits the code is a clear error."""
    card = read_card(path)
    use_config = {k: v for k, v in card.get("config", {}).items()
                  if not (k in RETIRED_CONFIG_KEYS and k not in config)}
    fix = (f"Fix: regenerate it with `{regenerate_command(name)}` (or delete {_short(path)} "
           "to train your own).")
    if set(use_config) != set(config):
        gone, new = sorted(set(use_config) - set(config)), sorted(set(config) - set(use_config))
        raise CheckpointMismatchError(
            f"The shipped checkpoint {_short(path)} was made by an older version of the course: "
            f"its config has fields the code no longer knows ({', '.join(gone) or 'none'}) and "
            f"lacks fields the code needs ({', '.join(new) or 'none'}). " + fix)
    try:
        model = build(dict(use_config)).to(device)
        card = load_model(path, model, config=use_config)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{e}\nThe shipped checkpoint no longer matches the code. "
                                      + fix) from e
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointMismatchError(
            f"The shipped checkpoint {_short(path)} cannot be built by this version of the "
            f"course ({type(e).__name__}: {e}). " + fix) from e
    return model, card


def _stopped_short(resume: Path) -> dict | None:
    """``{"stopped_by": "time", "step", "steps"}`` when the run at ``resume`` was stopped
    by its time budget before its step target, else None."""
    if not resume.exists():
        return None
    try:
        card = read_card(resume)
    except CheckpointError:
        return None
    history = card.get("history") or {}
    step, steps = history.get("step"), card.get("steps")
    if history.get("stopped_by") == "time" and isinstance(steps, int) and isinstance(step, int) \
            and step < steps:
        return {"stopped_by": "time", "step": step, "steps": steps}
    return None


def _unfinished(card: Mapping, resume: Path) -> dict | None:
    """The ``training`` entry of a checkpoint stopped by time whose resume state is still there."""
    training = card.get("training")
    if isinstance(training, Mapping) and training.get("stopped_by") == "time" and resume.exists():
        return dict(training)
    return None


def variant_name(base: str, changes) -> str:
    """The checkpoint name of a variant of ``base``: ``base-key=value`` for every change,
    sorted by key, tuples written ``64x128`` (``diffusion-patch=1``,
    ``autoencoder-block_out_channels=16x32``), so a name is a plain file name that says
    what differs."""
    def plain(value) -> str:
        return "x".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
    return base + "".join(f"-{k}={plain(v)}" for k, v in sorted(dict(changes).items()))


def shortened_note(card: Mapping, name: str | None = None) -> str:
    """One line for a model whose training its time budget cut short (else ``""``):
    what happened and how to continue or retrain. Self-checks add it to their messages."""
    training = card.get("training") if isinstance(card, Mapping) else None
    if not isinstance(training, Mapping) or training.get("stopped_by") != "time":
        return ""
    what = f"'{name}'" if name else "this model"
    return (f"Note: {what} was stopped by its time budget after {training.get('step')} of "
            f"{training.get('steps')} steps (a busy or slow CPU?). Run the cell again to continue "
            "training toward its steps, or pass retrain=True to train it again from scratch.")


def _short(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(paths.REPO_ROOT))
    except ValueError:
        return str(path)

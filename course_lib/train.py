"""Train the course's models outside Jupyter: ``python -m course_lib.train <name>|all``.

For instructors (train every model of a profile once, on one GPU or several, then hand
the checkpoints out) and for the course itself (``--reference`` makes the reference
checkpoints shipped in ``data/shipped/``). It trains through the same load-or-train
functions the notebooks call, in dependency order (CLIP -> judge -> autoencoder ->
generators), and prints a summary table::

    python -m course_lib.train all                       # the active profile (COURSE_PROFILE)
    python -m course_lib.train gan --profile cpu --steps 2000 --retrain
    COURSE_PROFILE=gpu accelerate launch --num_processes 4 -m course_lib.train all
    torchrun --nproc_per_node 4 -m course_lib.train all
    python -m course_lib.train gan --reference           # data/shipped/ (see below)
    python -m course_lib.train --bundle --profile gpu    # build/checkpoints-gpu.tar.gz

Options:

* ``--steps N`` / ``--minutes M`` change the step target / time budget of the models
  named on the command line (``all``: every model); their dependencies keep the profile's.
  A checkpoint trained with other sizes is not silently replaced: add ``--retrain``.
* ``--reference`` trains each named model's *reference configuration* (its profile
  section changed by what it registered as ``reference=``: a longer budget, maybe bigger
  sizes) in ``data/checkpoints/<profile>-reference/``, then writes a **sampling-only,
  fp16** copy of it and of everything it depends on to ``data/shipped/`` with a card
  saying how it was made (command, commit, device, steps, minutes, metrics measured on
  the fp16 weights). Each file must stay <= 10 MB and all of them <= 60 MB.

Only one process prints and writes under ``accelerate launch`` / ``torchrun``.
A model registers itself in :mod:`course_lib.registry`; nothing here names a model.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from . import checkpoints, paths, registry
from .profiles import Profile, get_profile
from .runtime import get_device, is_main_process, num_processes

__all__ = ["main", "train", "make_bundle", "export_reference", "summarise", "MAX_REFERENCE_MB",
           "MAX_SHIPPED_MB", "EVAL_N", "CHECK_N"]

#: Size limits of what is committed to data/shipped/ (the repository stays small).
MAX_REFERENCE_MB = 10.0
MAX_SHIPPED_MB = 60.0
#: Prompts graded by the summary table (the notebooks grade more; this keeps the command quick).
EVAL_N = 500
#: Prompts of the small check stored in a reference's card and reproduced by the tests.
CHECK_N = 64


# ----------------------------------------------------------------------------- helpers


def _unpack(result):
    """``load_or_train`` functions return ``(model, card)`` (the generator contract); a
    registered model of one's own that breaks it gets a clear error."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping):
        return result
    raise TypeError("A registered load_or_train function must return (model, card), the contract "
                    f"of course_lib.conditioning; it returned {type(result).__name__}.")


def _positive_minutes(text: str) -> float:
    """``--minutes``, checked where it is parsed: a finite number above 0 (NaN and inf are not
    budgets; they would pass a ``<= 0`` test and fail later, deep in the profile)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes (e.g. --minutes 5)") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the time budget must be a finite number of minutes above 0 "
                                         "(e.g. --minutes 5)")
    return value


def _section_changes(entry: registry.Trainable, profile: Profile, *, steps=None, minutes=None,
                     reference: bool = False) -> dict:
    """The changes to ``entry``'s profile section asked for on the command line."""
    if entry.section is None:
        if steps is not None or minutes is not None:
            parts = " and ".join(entry.after) or "its parts"
            raise SystemExit(f"--steps/--minutes: {entry.name!r} has no training of its own (it joins "
                             f"{parts}); name those instead, e.g. `{entry.after[-1] if entry.after else entry.name}"
                             " --steps 600`.")
        return {}
    section = getattr(profile, entry.section)
    changes = dict(entry.reference) if reference else {}
    for field, value in (("steps", steps), ("max_minutes", minutes)):
        if value is None:
            continue
        if not hasattr(section, field):
            raise SystemExit(f"--{'steps' if field == 'steps' else 'minutes'}: model "
                             f"{entry.name!r} has no {field} in profile.{entry.section}.")
        changes[field] = int(value) if field == "steps" else float(value)
    return changes


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.REPO_ROOT, text=True,
                             capture_output=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=paths.REPO_ROOT, text=True, capture_output=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        return commit + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device_words(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{num_processes()}x {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"{torch.get_num_threads()} CPU cores ({platform.machine()})"


def sample_options(entry: registry.Trainable, profile: Profile) -> dict:
    """The sampling settings a generator's reference check records beside its numbers, so a
    later default (e.g. guidance rescale) cannot move what the check reproduces: today the
    guidance rescale of the samplers that take one."""
    if not _takes_guidance_rescale(entry):
        return {}
    section = profile.decoder if entry.name.startswith("unclip") else profile.diffusion
    return {"guidance_rescale": float(section.guidance_rescale)}


def check_options(entry: registry.Trainable, check: Mapping) -> dict:
    """The sampling settings to reproduce a stored reference check with: those it recorded; a
    check written before the course recorded them was sampled without guidance rescale."""
    if "sample_options" in check:
        return dict(check["sample_options"])
    return {"guidance_rescale": 0.0} if _takes_guidance_rescale(entry) else {}


def _takes_guidance_rescale(entry: registry.Trainable) -> bool:
    import inspect

    sample = entry.resolved().sample
    return sample is not None and "guidance_rescale" in inspect.signature(sample).parameters


def summarise(entry: registry.Trainable, model, card: Mapping, profile: Profile, *,
              n: int = EVAL_N, seed: int = 0, options: Mapping | None = None) -> dict:
    """Key numbers of a trained model: its own ``summarise``, or for a generator (one that
    registered ``sample``) judge alignment, Fréchet distance and images/s through
    ``metrics.evaluate`` on ``n`` prompts, sampled with ``options``; else the numbers its
    card stores."""
    if entry.summarise is not None:
        return dict(entry.summarise(model, card, profile))
    if entry.sample is not None:
        from . import metrics
        from .conditioning import get_text_encoder
        try:
            clip_model = get_text_encoder(model).clip
        except (RuntimeError, AttributeError):
            clip_model = None
        options = dict(options or {})
        report = metrics.evaluate(lambda caps: entry.sample(model, caps, seed=seed, **options),
                                  profile=profile, n=n, name=entry.name, clip_model=clip_model,
                                  diversity_prompts=0, speed=True)
        row = report[entry.name]
        keep = {"all right (seen)": "all-four seen %", "all right (held-out)": "all-four held-out %",
                "FD": "FD", "FD floor": "FD floor", "images/s": "images/s"}
        out = {label: _number(row[k]) for k, label in keep.items() if k in row}
        for label in ("all-four seen %", "all-four held-out %"):
            if isinstance(out.get(label), float):
                out[label] = round(100 * out[label], 1)
        return out
    timing = ("minutes", "seconds", "steps", "budget")
    numbers = {}
    for k, v in (card.get("metrics") or {}).items():
        if isinstance(v, Mapping) and isinstance(v.get("all"), (int, float)):
            k, v = f"{k} (all)", v["all"]          # e.g. the judge's val_accuracy per attribute
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not any(t in k for t in timing):
            numbers[k] = v
    return {"card metrics": ", ".join(f"{k} {_number(v)}" for k, v in list(numbers.items())[:3]) or None}


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return round(value, 3)


# ----------------------------------------------------------------------------- references


def _sampling_only_fp16(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as a sampling-only fp16 state: float tensors halved, others kept
    (integer buffers such as step counters). Optimizer state never enters a model's state_dict."""
    return {k: (v.detach().half() if v.is_floating_point() else v.detach())
            for k, v in model.state_dict().items()}


def _round_to_fp16(model: torch.nn.Module) -> None:
    """Give the model in memory exactly the weights its fp16 file will hold, so the metrics
    written on the card are those a learner who loads the file reproduces."""
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.half().to(v.dtype))


def _round_file(path: Path, prepare=None) -> None:
    """Round a checkpoint's float weights to fp16 values in place (kept in their dtype),
    after ``prepare(tensors)`` (an entry's ``prepare_reference``) when given."""
    tensors, card = checkpoints.load_checkpoint(path)
    if prepare is not None:
        prepare(tensors)
    rounded = {k: (v.half().to(v.dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
    checkpoints.save_checkpoint(path, rounded, card)


def export_reference(entry: registry.Trainable, model, card: Mapping, profile: Profile, *,
                     command: str, minutes: float | None, check: Mapping | None = None,
                     metrics: Mapping | None = None, directory: Path | None = None) -> Path:
    """Write ``model`` as a sampling-only fp16 reference ``<directory>/<name>.safetensors``.

    Raises:
        ValueError: the file would exceed :data:`MAX_REFERENCE_MB` (it is not written).
    """
    directory = Path(directory or paths.SHIPPED_DIR)
    tensors, packed = checkpoints.pack_zero_rows(_sampling_only_fp16(model))
    size_mb = sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6
    if size_mb > MAX_REFERENCE_MB:
        raise ValueError(
            f"The reference of {entry.name!r} would be {size_mb:.1f} MB in fp16, over the "
            f"{MAX_REFERENCE_MB:.0f} MB a shipped file may take. Fix: make its reference "
            f"sizes (reference= in its registry call) smaller.")
    training = card.get("metrics") or {}
    steps = card.get("training", {}).get("step") if card.get("training") else None
    if steps is None:
        steps = training.get("steps", getattr(getattr(profile, entry.section or "", None), "steps", None))
    ref = {"command": command, "commit": _git_commit(), "device": _device_words(get_device()),
           "processes": num_processes(), "steps": steps, "minutes": minutes,
           "profile": profile.name, "metrics": dict(metrics or {}), "check": dict(check or {})}
    new_card = {k: v for k, v in card.items() if k not in ("source", "date", "versions")}
    new_card.update({"reference": ref, "dtype": "float16", "sampling_only": True})
    if packed:
        new_card[checkpoints.PACKED_KEY] = packed
    path = directory / f"{entry.name}{checkpoints.SUFFIX}"
    checkpoints.save_checkpoint(path, tensors, new_card)
    return path


def reference_check(entry: registry.Trainable, model, profile: Profile, n: int = CHECK_N) -> dict:
    """The small evaluation stored in a reference's card (and reproduced by the tests)."""
    if entry.sample is None:
        return {}
    options = sample_options(entry, profile)
    numbers = summarise(entry, model, {}, profile, n=n, seed=0, options=options)
    numbers.pop("images/s", None)            # a speed depends on the machine, not the weights
    return {"n": n, "seed": 0, "sample_options": options, "metrics": numbers}


def _check_total_size(directory: Path) -> float:
    total = sum(p.stat().st_size for p in Path(directory).glob(f"*{checkpoints.SUFFIX}")) / 1e6
    if total > MAX_SHIPPED_MB:
        raise ValueError(f"data/shipped/ holds {total:.1f} MB of checkpoints, over the "
                         f"{MAX_SHIPPED_MB:.0f} MB the repository allows: ship fewer references.")
    return total


# ----------------------------------------------------------------------------- the command


def train(names: Sequence[str] = ("all",), *, profile=None, steps: int | None = None,
          minutes: float | None = None, retrain: bool = False, reference: bool = False,
          eval_n: int = EVAL_N, command: str | None = None, shipped_dir: Path | None = None,
          verbose: bool = True) -> list[dict]:
    """Train (or load) ``names`` and what they need, in order; returns the summary rows."""
    base = get_profile(profile)
    # a generator made of others' checkpoints (unCLIP) is graded only when named: "all" trains
    # and ships its parts
    entries = [e for e in registry.in_order(list(names)) if e.trains or e.name in names]
    wanted = {e.name for e in entries} if "all" in names else set(names)
    command = command or "python -m course_lib.train " + " ".join(map(shlex.quote, sys.argv[1:]))
    rows: list[dict] = []
    source = "own" if reference else checkpoints.current_source()
    # One profile for the whole chain: a generator loads its CLIP with the same sizes the
    # CLIP was trained with here, or the two would not match.
    all_changes: dict = {}
    for entry in entries:
        named = entry.name in wanted
        changes = _section_changes(entry, base, steps=steps if named else None,
                                   minutes=minutes if named else None, reference=reference)
        if changes:
            all_changes[entry.section] = {**all_changes.get(entry.section, {}), **changes}
    profile_i = base.replace(**all_changes) if all_changes else base
    if reference:      # references train apart from the learner's own checkpoints
        profile_i = profile_i.replace(name=f"{base.name}-reference", use_shipped_checkpoints=False)
    for entry in entries:
        named = entry.name in wanted
        changes = all_changes.get(entry.section, {})
        if verbose and is_main_process():
            print(f"== {entry.name} ({profile_i.name}"
                  + (f", {entry.section}: {changes}" if changes else "") + ")", flush=True)
        t0 = time.perf_counter()
        with checkpoints.use(source):
            model, card = _unpack(entry.load_or_train(profile_i, retrain=retrain and named))
        took = (time.perf_counter() - t0) / 60
        trained = card.get("source") == "trained"
        train_minutes = (card.get("metrics") or {}).get("train_minutes")
        minutes_i = train_minutes if isinstance(train_minutes, (int, float)) else (took if trained else None)
        if reference and is_main_process() and entry.trains:
            # what later models of the chain train on (a generator's CLIP) must be exactly
            # what learners load from the fp16 files, or its fingerprint would not match
            if entry.prepare_reference is not None:
                entry.prepare_reference(model.state_dict())
            _round_to_fp16(model)
            _round_file(checkpoints.checkpoint_path(entry.name, profile_i), entry.prepare_reference)
        numbers = summarise(entry, model, card, profile_i, n=eval_n) if is_main_process() else {}
        row = {"model": entry.name, "source": card.get("source", "?"),
               "steps": (card.get("training") or {}).get("step") or (card.get("metrics") or {}).get("steps"),
               "minutes": minutes_i, "wall minutes": took, **numbers}
        if reference and is_main_process() and entry.trains:
            check = reference_check(entry, model, profile_i)
            path = export_reference(entry, model, card, profile_i, command=command,
                                    minutes=minutes_i, metrics=numbers, check=check,
                                    directory=shipped_dir)
            row["shipped"] = f"{path.stat().st_size / 1e6:.1f} MB"
        rows.append(row)
    if reference and is_main_process():
        _check_total_size(Path(shipped_dir or paths.SHIPPED_DIR))
    if verbose and is_main_process():
        print(format_table(rows, base.name))
    return rows


def format_table(rows: Sequence[Mapping], profile_name: str) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def cell(value):
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)

    table = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [f"Summary (profile {profile_name}):", line, "-" * len(line)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in table]
    return "\n".join(out)


def make_bundle(profile=None, out: Path | None = None) -> Path:
    """Pack a profile's trained checkpoints for learners: sampling-only (no resume state,
    no optimizer) and fp16, so a workshop's bundle stays small. Learners unpack it into
    ``data/shipped/``. Returns the ``.tar.gz`` path."""
    import tarfile
    import tempfile

    p = get_profile(profile)
    source = paths.CHECKPOINT_DIR / p.checkpoint_folder
    files = sorted(f for f in source.glob(f"*{checkpoints.SUFFIX}") if ".resume" not in f.name)
    if not files:
        raise ValueError(f"No checkpoints in {source} to bundle. Train them first: "
                         f"`COURSE_PROFILE={p.name} python -m course_lib.train all`.")
    out = Path(out or paths.REPO_ROOT / "build" / f"checkpoints-{p.name}.tar.gz")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            tensors, card = checkpoints.load_checkpoint(f)
            half = {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}
            card = {**card, "dtype": "float16", "sampling_only": True, "bundled_from": p.name}
            checkpoints.save_checkpoint(Path(tmp) / f.name, half, card)
        with tarfile.open(out, "w:gz") as tar:
            for f in sorted(Path(tmp).iterdir()):
                tar.add(f, arcname=f.name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    known = sorted(registry.registered())
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.train",
        description="Train course models outside Jupyter, in dependency order. "
                    f"Models: {', '.join(known)} (or all).")
    parser.add_argument("names", nargs="*", help="models to train, or 'all'")
    parser.add_argument("--profile", help="smoke, cpu or gpu (default: COURSE_PROFILE, else detected)")
    parser.add_argument("--steps", type=int, help="step target of the named models")
    parser.add_argument("--minutes", type=_positive_minutes, help="time budget (minutes) of the named models")
    parser.add_argument("--retrain", action="store_true",
                        help="train the named models again even if a checkpoint exists")
    parser.add_argument("--reference", action="store_true",
                        help="train the reference configuration and write it to data/shipped/")
    parser.add_argument("--bundle", action="store_true",
                        help="pack the profile's checkpoints (fp16, sampling-only) into build/")
    parser.add_argument("--eval-n", type=int, default=EVAL_N,
                        help=f"prompts graded for the summary table (default {EVAL_N})")
    args = parser.parse_args(argv)
    if args.bundle:
        try:
            out = make_bundle(args.profile)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"Wrote {out} ({out.stat().st_size / 1e6:.1f} MB). Learners unpack it into "
              f"data/shipped/:  mkdir -p data/shipped && tar -xzf {out.name} -C data/shipped")
        return 0
    if not args.names:
        parser.error("name the models to train (or 'all'); models: " + ", ".join(known))
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    try:
        train(args.names, profile=args.profile, steps=args.steps, minutes=args.minutes,
              retrain=args.retrain, reference=args.reference, eval_n=args.eval_n)
    except (registry.UnknownModelError, checkpoints.CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("COURSE_PROGRESS", "text")
    sys.exit(main())

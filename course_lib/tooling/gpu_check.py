"""The gpu profile, checked before a GPU sees it, and the GPU memory each of its models needs.

The gpu profile (64-pixel images, wider models, bf16 on a GPU) is the one a workshop
trains with, often on a machine nobody tried before the day. This module runs every
registered model at the gpu profile's *architecture and image size* with tiny data and
batch sizes, so its first error shows up on any CPU (``tests/test_gpu_profile.py`` in CI):

* :func:`tiny_gpu_profile` -- the gpu profile with its model sizes kept and its data,
  steps and batches shrunk (what trains here in seconds per model);
* :func:`check_models` -- every registered model trained two steps at batch 2 through
  ``training.fit`` (its own ``load_or_train``), saved, loaded again and sampled with two
  denoising steps; it returns each model's seconds;
* :func:`memory_rows` -- per model of the gpu profile: parameters, and the GPU memory a
  training step needs at the profile's batch size (weights, gradients, AdamW's two
  moments, an EMA copy, the frozen models it reads, and the activations autograd keeps
  for the backward pass -- measured on the CPU at two small batches and extended
  linearly to the profile's batch), in GiB. The README's table is its output and a test
  keeps the two equal.

Run it as ``python -m course_lib.tooling.gpu_check``: it prints each model's seconds and
the memory table.
"""
from __future__ import annotations

import argparse
import contextlib
import time
import weakref
from collections.abc import Iterator

import torch

from .. import paths, registry
from ..profiles import PROFILES, Profile

__all__ = ["tiny_gpu_profile", "check_models", "memory_rows", "format_memory_table", "ActivationMeter"]

CAPTIONS = ["a small red circle at the top", "a big blue star on the left"]

#: Of each profile section, the fields that set how much data and how many steps are used
#: (shrunk by :func:`tiny_gpu_profile`); every other field (the architecture) is kept.
_DATA_FIELDS = {
    "data": {"n_train": 16, "n_val": 8, "n_test": 8, "n_heldout": 8},
    "clip": {"steps": 2, "warmup_steps": 1},
    "judge": {"n_train": 16, "steps": 2, "n_eval": 8},
    "gan": {"n_train": 16, "steps": 2},
    "galip": {"n_train": 16, "steps": 2, "probes": 0, "ablation_steps": 2},
    "vae": {"steps": 2, "compare_steps": 2},
    "autoencoder": {"steps": 2},
    "diffusion": {"n_train": 16, "steps": 2, "sample_steps": 2, "n_eval": 4, "n_curve": 2,
                  "stability_steps": 2},
    "prior": {"n_train": 16, "steps": 2, "sample_steps": 2, "n_eval": 4},
    "decoder": {"steps": 2, "sample_steps": 2, "n_eval": 4, "n_probe": 2, "n_invert": 1,
                "inversion_steps": 2},
}


def tiny_gpu_profile(batch_size: int = 2, base: Profile | None = None) -> Profile:
    """The gpu profile's models at its image size, with tiny data, 2 steps and ``batch_size``.

    Every ``batch_size`` of the profile becomes ``batch_size`` and every time budget an hour
    (a guard that never fires: a slow CPU must not turn the check into a time-budget test)."""
    base = base or PROFILES["gpu"]
    changes = {}
    for section, fields in _DATA_FIELDS.items():
        current = getattr(base, section)
        sizes = {k: v for k, v in fields.items() if hasattr(current, k)}
        if hasattr(current, "batch_size"):
            sizes["batch_size"] = batch_size
        if hasattr(current, "max_minutes"):
            sizes["max_minutes"] = 60.0
        changes[section] = sizes
    return base.replace(**changes, demo_steps=2, plot_every_s=3600.0)


# ----------------------------------------------------------------------------- activations


class ActivationMeter:
    """The bytes of tensors autograd keeps for backward passes, live and at their peak.

    Inside ``with meter:`` every tensor a forward pass saves for its backward pass is counted
    (once per storage, however many operations save it) until the graph holding it is freed,
    which is the activation memory of training. Parameters and frozen weights are counted
    too; :func:`saved_activation_bytes` removes them by measuring at two batch sizes."""

    def __init__(self):
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list] = {}        # storage pointer -> [bytes, holders]
        self._hooks = None

    def _pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        entry = self._refs.get(key)
        if entry is None:
            entry = self._refs[key] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        holder = _Held(tensor)
        weakref.finalize(holder, self._release, key)
        return holder

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._refs[key]

    @staticmethod
    def _unpack(holder):
        return holder.tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False


class _Held:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


# ----------------------------------------------------------------------------- the check


@contextlib.contextmanager
def _data_folder(root) -> Iterator[None]:
    """Checkpoints and caches under ``root`` (never the learner's data/)."""
    saved = {name: getattr(paths, name) for name in ("CHECKPOINT_DIR", "SHIPPED_DIR", "CACHE_DIR")}
    try:
        for name in saved:
            setattr(paths, name, root / name.lower())
        yield
    finally:
        for name, value in saved.items():
            setattr(paths, name, value)


#: Bytes per trained parameter in a training step: fp32 weights, fp32 gradients and
#: AdamW's two fp32 moments (mixed precision keeps fp32 master weights: the same 16 bytes).
BYTES_PER_TRAINED = 16
#: Allowance for the CUDA context, cuDNN/cuBLAS workspaces and the caching allocator's slack.
OVERHEAD_GIB = 1.0
#: The profile section whose ``batch_size`` a model trains with, where it is not its own.
_BATCH_SECTION = {"unclip-decoder": "diffusion"}


def check_models(profile: Profile, root, *, names=None, sample_steps: int = 2,
                 measure_batch: int | None = 4, full: Profile | None = None) -> dict[str, dict]:
    """Train (``load_or_train``), load again and sample every registered model of ``profile``.

    With ``measure_batch``, each trained model is first trained one step at that batch size
    (its dependencies at ``profile``'s), and the activations both runs keep are measured
    (:class:`ActivationMeter`) for :func:`memory_rows`.

    Returns ``{name: {"train_s", "load_s", "sample_s", "parameters", ...}}``; a generator's
    samples pass the package's image check (inside its ``sample``) and have the profile's
    image size."""
    from pathlib import Path

    from ..training import count_parameters

    out = {}
    size = profile.data.image_size
    base_batch = None
    with _data_folder(Path(root)):
        for entry in registry.in_order(names):
            row = {}
            section = _BATCH_SECTION.get(entry.name, entry.section)
            if measure_batch and entry.trains and section:
                base_batch = getattr(profile, section).batch_size
                bigger = profile.replace(**{section: {"batch_size": measure_batch}})
                if entry.section:
                    bigger = bigger.replace(**{entry.section: {"steps": 1}})
                with ActivationMeter() as meter:
                    entry.load_or_train(bigger, retrain=True, verbose=False)
                row["saved_peak_big"] = meter.peak
            t0 = time.perf_counter()
            with ActivationMeter() as meter:
                model, card = entry.load_or_train(profile, retrain=bool(row), verbose=False)
            t1 = time.perf_counter()
            if row:
                row["saved_peak"], row["batches"] = meter.peak, (base_batch, measure_batch)
            again, card2 = entry.load_or_train(profile, verbose=False)
            t2 = time.perf_counter()
            if card2["source"] != "loaded" and entry.trains:
                raise AssertionError(f"{entry.name}: the second load_or_train did not load its checkpoint "
                                     f"(source {card2['source']!r})")
            config = card.get("config", {}) if isinstance(card, dict) else {}
            row.update(train_s=t1 - t0, load_s=t2 - t1,
                       parameters=count_parameters(model, trainable_only=False),
                       ema=bool(config.get("ema_decay")),
                       frozen_parameters=sum(count_parameters(m, trainable_only=False)
                                             for m in _frozen_parts(model).values()))
            if entry.sample is not None:
                options = {"steps": sample_steps} if _takes(entry.sample, "steps") else {}
                images = entry.sample(again, CAPTIONS, seed=0, **options)
                row["sample_s"] = time.perf_counter() - t2
                if tuple(images.shape) != (len(CAPTIONS), 3, size, size):
                    raise AssertionError(f"{entry.name}: sample gave {tuple(images.shape)}, expected "
                                         f"({len(CAPTIONS)}, 3, {size}, {size})")
            out[entry.name] = row
    return out


def _takes(fn, name: str) -> bool:
    import inspect
    return name in inspect.signature(fn).parameters


def _frozen_parts(model) -> dict[str, torch.nn.Module]:
    """The frozen models a trained model reads while training (its CLIP, its autoencoder)."""
    parts = {}
    enc = getattr(model, "_text_encoder", None)
    if enc is not None and getattr(enc, "clip", None) is not None:
        parts["clip"] = enc.clip
    ae = getattr(model, "_autoencoder", None)
    if ae is not None:
        parts["autoencoder"] = ae
    return parts


def memory_rows(checked: dict[str, dict], full: Profile | None = None, card_gib: float = 15.0) -> list[dict]:
    """Per trained model of :func:`check_models`' result: GiB for one training step at the
    batch size of ``full`` (default the gpu profile), and the largest batch that fits a card
    with ``card_gib`` free (a "16 GB" card such as a T4 gives ~15 GiB to a process). See the
    module docstring."""
    full = full or PROFILES["gpu"]
    rows = []
    for name, row in checked.items():
        if "saved_peak" not in row:
            continue
        entry = registry.registered()[name]
        section = _BATCH_SECTION.get(name, entry.section)
        batch = int(getattr(full, section).batch_size)
        (b0, b1), p0, p1 = row["batches"], row["saved_peak"], row["saved_peak_big"]
        per_sample = max(0.0, (p1 - p0) / (b1 - b0))
        activations = max(0.0, p0 - per_sample * b0) + per_sample * batch
        ema = row.get("ema", False)
        trained, frozen = row["parameters"], row["frozen_parameters"]
        states = trained * BYTES_PER_TRAINED + (trained * 4 if ema else 0) + frozen * 4
        fixed = max(0.0, p0 - per_sample * b0)
        room = card_gib * 2 ** 30 - OVERHEAD_GIB * 2 ** 30 - states - fixed
        fits = int(room // per_sample) if per_sample else batch
        rows.append({"name": name, "batch_size": batch, "parameters": trained, "frozen_parameters": frozen,
                     "states_gib": states / 2 ** 30, "activations_gib": activations / 2 ** 30,
                     "total_gib": (states + activations) / 2 ** 30 + OVERHEAD_GIB,
                     "largest_batch": max(0, min(fits, 4096))})
    return rows


MEMORY_HEADER = ("| model | batch | trained parameters | frozen parameters read | weights, gradients, "
                 "AdamW, EMA, frozen (GiB) | activations (GiB) | total (GiB) | largest batch on 16 GB |")


def format_memory_table(rows: list[dict]) -> str:
    """The markdown table of :func:`memory_rows` (the README's)."""
    lines = [MEMORY_HEADER, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['batch_size']} | {r['parameters'] / 1e6:.2f} M | "
                     f"{r['frozen_parameters'] / 1e6:.2f} M | {r['states_gib']:.2f} | "
                     f"{r['activations_gib']:.2f} | {r['total_gib']:.1f} | {r['largest_batch']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m course_lib.tooling.gpu_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="models to check (default: all) and what they need")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    from ..runtime import get_accelerator
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        checked = check_models(tiny_gpu_profile(2), Path(tmp), names=args.names or None)
        if args.json:
            import json
            Path(args.json).write_text(json.dumps(
                {"mixed_precision": str(get_accelerator().mixed_precision), "models": checked}, indent=1))
        for name, row in checked.items():
            print(f"{name:18s} " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in row.items() if k.endswith("_s")))
        print(f"all models: {time.perf_counter() - t0:.1f} s\n")
        print(format_memory_table(memory_rows(checked)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Real weights: ``load_pretrained`` (a local file first; by name only when online and
asked) and ``save_open_clip_dir``. Taught in notebook 01, the closing section.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import open_clip
import torch
from torch import nn

from .. import checkpoints
from ..text import _MODEL_TOKENIZERS
from .model import build_clip

__all__ = [
    "PretrainedUnavailableError", "downloads_allowed", "load_pretrained", "save_open_clip_dir",
]


# =============================================================================
# 7. Real weights: load_pretrained
# =============================================================================


class PretrainedUnavailableError(RuntimeError):
    """Pretrained weights were asked for by name, but they are not here and we are offline."""


def _online(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """Can we reach the model hub? (False when ``HF_HUB_OFFLINE`` is set.)"""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_weights(arch: str, tag: str) -> str | None:
    """The weights file of (arch, tag) if an earlier download left it in the HF cache."""
    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, filename = os.path.split(hub)        # "org/name/" -> ("org/name", ""), as open_clip does
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for name in names:
        found = try_to_load_from_cache(repo_id=repo, filename=name)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _finish_pretrained(model: nn.Module, tokenizer, device) -> nn.Module:
    if not isinstance(tokenizer, open_clip.SimpleTokenizer):
        _MODEL_TOKENIZERS[model] = tokenizer
    return model.to(device).eval()


def _arch_suggestions(name: str) -> str:
    import difflib

    known = open_clip.list_models()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    examples = close or [m for m in known if m.startswith("ViT-B")][:5]
    return f" ({'close names' if close else 'e.g.'}: {', '.join(examples)})"


def _check_arch(arch) -> None:
    if not isinstance(arch, str) or arch not in open_clip.list_models():
        raise ValueError(f"Unknown open_clip architecture arch={arch!r}"
                         f"{_arch_suggestions(str(arch))}; open_clip.list_models() lists them all.")


def _looks_like_path(source: str) -> bool:
    return (os.sep in source or source.startswith(".") or source.startswith("~")
            or Path(source).suffix in (".safetensors", ".bin", ".pt", ".pth", ".npz"))


def downloads_allowed() -> bool:
    """Whether the learner asked for downloads (``COURSE_ALLOW_DOWNLOADS=1``).

    The course never downloads on its own: a named pretrained model is fetched only
    when this is set or ``load_pretrained(..., download=True)`` is passed.
    """
    return os.environ.get("COURSE_ALLOW_DOWNLOADS", "").strip().lower() in ("1", "true", "yes", "on")


def load_pretrained(source: str | os.PathLike, *, arch: str | None = None, tag: str | None = None,
                    device: str | torch.device | None = None, missing_ok: bool = False,
                    download: bool | None = None):
    """A CLIP from a local file or folder, or (when online) an open_clip model by name.

    Looks in this order:

    1. ``source`` is a folder with ``open_clip_config.json`` and weights (how models
       are stored on the Hugging Face hub, and what :func:`save_open_clip_dir` writes):
       ``open_clip.create_model_and_transforms("local-dir:<folder>")``.
    2. ``source`` is a file: a course checkpoint (``.safetensors`` with a card) is
       rebuilt from its card; any other weights file is an open_clip checkpoint
       for the architecture ``arch`` (e.g. ``"ViT-B-32"``), or for the
       ``open_clip_config.json`` beside it.
    3. ``source`` is a name: an open_clip architecture ("ViT-B-32", with ``tag``, e.g.
       "openai" or "laion2b_s34b_b79k"; default its first tag) or "hf-hub:org/repo".
       Weights already in the Hugging Face cache are used offline; otherwise they are
       downloaded, but only when asked (``download=True`` or ``COURSE_ALLOW_DOWNLOADS=1``)
       and online.

    Args:
        source: path or name (see above).
        arch: the open_clip architecture of a bare weights file.
        tag: the pretrained tag of a named architecture.
        device: where the model goes (default: the course device).
        missing_ok: when a named model is unavailable offline, print one line and
            return None instead of raising (the notebook then goes on with the course model).
        download: fetch a named model that is not cached; None reads
            ``COURSE_ALLOW_DOWNLOADS`` (see :func:`downloads_allowed`). The course never
            downloads unless asked.

    Returns:
        An open_clip model in eval mode; :func:`encode_image` / :func:`encode_text`
        and the rest of this module work on it (its own tokenizer and image
        preprocessing are used).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a bare weights file without ``arch``; an unknown architecture.
        PretrainedUnavailableError: a name while offline, with nothing cached.
    """
    from ..runtime import get_device

    device = get_device(device)
    src = os.path.expanduser(os.fspath(source))
    path = Path(src)
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{path} is a folder without open_clip_config.json: pass the "
                                    "weights file itself (with arch=...) or the folder open_clip wrote.")
        model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{path}", device="cpu")
        return _finish_pretrained(model, open_clip.get_tokenizer(f"local-dir:{path}"), device)
    if path.is_file():
        card = None
        if path.suffix == ".safetensors":
            try:
                card = checkpoints.read_card(path)    # a truncated file is an error naming it
            except checkpoints.NotACourseCheckpointError:
                card = None
        if card is not None and "vision_cfg" in card.get("config", {}):
            model = build_clip(card["config"])
            checkpoints.load_model(path, model)
            return model.to(device).eval()
        if arch is None and (path.parent / "open_clip_config.json").is_file():
            return load_pretrained(path.parent, device=device)
        if arch is None:
            raise ValueError(f"{path} holds bare weights: say which open_clip architecture they "
                             "belong to, e.g. load_pretrained(path, arch='ViT-B-32').")
        _check_arch(arch)
        try:
            model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=str(path), device="cpu")
        except Exception as e:       # open_clip/torch/safetensors raise many kinds here
            raise ValueError(
                f"Cannot load {path} ({path.stat().st_size} bytes) as open_clip {arch!r} weights "
                f"({type(e).__name__}: {str(e)[:200]}). Either arch is not the architecture the "
                "weights were saved from (use the name they were published with), or the file is "
                "truncated or corrupt (copy or download it again).") from e
        return _finish_pretrained(model, open_clip.get_tokenizer(arch), device)
    if _looks_like_path(src) and not src.startswith("hf-hub:"):
        raise FileNotFoundError(f"No file or folder at {path}. Check the path (it is relative "
                                f"to {Path.cwd()}).")

    # a name
    if src.startswith("hf-hub:"):
        what, cached = src, None
    else:
        if src not in open_clip.list_models():
            raise FileNotFoundError(
                f"{src!r} is neither a file or folder (looked in {Path.cwd()}) nor an open_clip "
                f"architecture{_arch_suggestions(src)}. Check the path, or the name.")
        tags = open_clip.list_pretrained_tags_by_model(src)
        if not tags:
            raise ValueError(f"open_clip has no pretrained weights for {src!r}.")
        tag = tag or tags[0]
        if tag not in tags:
            raise ValueError(f"{src!r} has no weights tagged {tag!r}; tags: {', '.join(tags)}.")
        what, cached = f"{src} ({tag})", _cached_weights(src, tag)
        if cached is not None:
            model, _, _ = open_clip.create_model_and_transforms(src, pretrained=cached, device="cpu")
            preprocess = {**open_clip.get_model_preprocess_cfg(model),
                          **{k: v for k, v in (open_clip.get_pretrained_cfg(src, tag) or {}).items()
                             if k in ("mean", "std", "interpolation", "resize_mode")}}
            open_clip.set_model_preprocess_cfg(model, preprocess)
            return _finish_pretrained(model, open_clip.get_tokenizer(src), device)
    download = downloads_allowed() if download is None else download
    if not download or not _online():
        why = ("downloads are off (set COURSE_ALLOW_DOWNLOADS=1 or pass download=True to fetch it)"
               if not download else "it cannot be fetched offline")
        message = (f"open_clip {what} is not on this machine and {why}; going on with the "
                   "course's model (or pass a local file to load_pretrained).")
        if missing_ok:
            print(message)
            return None
        raise PretrainedUnavailableError(message)
    if src.startswith("hf-hub:"):
        model, _, _ = open_clip.create_model_and_transforms(src, device="cpu")
    else:
        model, _, _ = open_clip.create_model_and_transforms(src, pretrained=tag, device="cpu")
    return _finish_pretrained(model, open_clip.get_tokenizer(src), device)


def save_open_clip_dir(model: open_clip.CLIP, directory: str | os.PathLike,
                       config: Mapping | None = None) -> Path:
    """Save a course CLIP the way open_clip models are published (a folder open_clip can load).

    Writes ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``) and
    ``open_clip_model.safetensors``. ``open_clip.create_model_and_transforms(
    "local-dir:<folder>")`` and :func:`load_pretrained` read it back.

    Args:
        model: the CLIP. directory: the folder (created).
        config: its :func:`clip_config` (default: read from the model's sizes).
    """
    import json

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = _config_of(model)
    model_cfg = {k: config[k] for k in ("embed_dim", "vision_cfg", "text_cfg")}
    preprocess = dict(open_clip.get_model_preprocess_cfg(model))
    with open(directory / "open_clip_config.json", "w", encoding="utf-8") as f:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, f, indent=2)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    return directory


def _config_of(model: open_clip.CLIP) -> dict:
    """The open_clip config of a course-built CLIP, read back from its modules."""
    v, blocks = model.visual, model.transformer.resblocks
    size = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    patch = v.patch_size if isinstance(v.patch_size, int) else v.patch_size[0]
    vblock = v.transformer.resblocks[0].attn
    return {
        "embed_dim": int(v.output_dim),
        "vision_cfg": {"image_size": int(size), "patch_size": int(patch), "width": int(v.transformer.width),
                       "layers": int(v.transformer.layers),
                       "head_width": int(v.transformer.width // vblock.num_heads)},
        "text_cfg": {"context_length": int(model.context_length), "vocab_size": int(model.vocab_size),
                     "width": int(model.transformer.width), "heads": int(blocks[0].attn.num_heads),
                     "layers": int(model.transformer.layers)},
    }



"""Tokenizing captions with clear errors (open_clip's offline byte-pair tokenizer).

A leaf, below both users: the CLIP (``course_lib.clip`` re-exports every name) and the
data (``course_lib.data.folder`` counts a captions file's tokens). Taught in notebook 01.
"""
from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence

import open_clip
import torch
from torch import nn

__all__ = ["CaptionError", "get_tokenizer", "tokenize", "count_tokens", "is_blank"]


class CaptionError(ValueError):
    """A caption the text encoder cannot read as asked: empty, or longer than its context."""


def is_blank(caption: str) -> bool:
    """True for a caption with nothing to read: empty, spaces, or only invisible characters
    (Unicode "format" characters such as a zero-width space or a byte-order mark, which a
    copy-paste brings along and the tokenizer would embed as if they were text)."""
    import unicodedata

    return not any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in caption)


@functools.lru_cache(maxsize=8)
def get_tokenizer(context_length: int = 32) -> open_clip.SimpleTokenizer:
    """open_clip's byte-pair tokenizer (the one OpenAI's CLIP uses), offline.

    Args:
        context_length: tokens per caption, start and end markers included.
    """
    return open_clip.SimpleTokenizer(context_length=int(context_length))


#: Tokenizers of loaded pretrained models that use another one (e.g. SigLIP's).
_MODEL_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tokenizer_for(model: nn.Module):
    tok = _MODEL_TOKENIZERS.get(model)
    return tok if tok is not None else get_tokenizer(model.context_length)


def _as_caption_list(captions) -> list[str]:
    """One caption or a list (any iterable) of them, as a list of str; else a clear error."""
    if isinstance(captions, str):
        return [captions]
    if isinstance(captions, (bytes, bytearray)):
        raise TypeError(f"The captions are bytes ({captions[:40]!r}), not text: decode them first, "
                        "e.g. captions.decode('utf-8').")
    if isinstance(captions, Mapping):
        raise TypeError("The captions are a dict: pass a list of strings, e.g. list(d.values()) "
                        "(a dict would be read by its keys).")
    if isinstance(captions, torch.Tensor) or not isinstance(captions, Iterable):
        raise TypeError(f"Expected a caption (str) or a list of captions, not a "
                        f"{type(captions).__name__} ({captions!r}).")
    captions = list(captions)
    if not captions:
        raise CaptionError("No captions were given (an empty list). Pass at least one caption.")
    for i, text in enumerate(captions):
        if isinstance(text, (bytes, bytearray)):
            raise TypeError(f"Caption {i} is bytes ({text!r}), not text: decode it first, "
                            "e.g. text.decode('utf-8').")
        if not isinstance(text, str):
            raise TypeError(f"Caption {i} is a {type(text).__name__} ({text!r}), not a str.")
    return captions


def count_tokens(captions: str | Sequence[str], context_length: int = 32) -> list[int]:
    """Tokens each caption needs, start and end markers included.

    Args:
        captions: one caption or a list.
        context_length: only selects the (cached) tokenizer; nothing is cut.
    """
    tok = get_tokenizer(context_length)
    return [len(tok.encode(text)) + 2 for text in _as_caption_list(captions)]


def tokenize(captions: str | Sequence[str], context_length: int = 32, *, truncate: bool = False,
             tokenizer=None) -> torch.Tensor:
    """Captions -> token ids ``(N, context_length)``, padded with 0, checked first.

    Args:
        captions: one caption or a list of them. Text is lower-cased and cleaned
            the way open_clip does (``ftfy``, whitespace); any Unicode is accepted.
        context_length: tokens the text encoder reads (its ``model.context_length``).
        truncate: cut over-long captions (with a warning) instead of raising.
        tokenizer: another open_clip tokenizer (a pretrained model's); default
            open_clip's ``SimpleTokenizer``.

    Raises:
        CaptionError: a caption is empty or only spaces; a caption has more tokens
            than ``context_length`` (unless ``truncate``). The message names the
            caption, its token count and the limit.
        TypeError: a caption is not a str.
    """
    captions = _as_caption_list(captions)
    context_length = int(context_length)
    simple = tokenizer is None or isinstance(tokenizer, open_clip.SimpleTokenizer)
    tok = get_tokenizer(context_length) if tokenizer is None else tokenizer
    too_long = []
    for i, text in enumerate(captions):
        n = len(tok.encode(text)) if simple else None
        if is_blank(text) or n == 0:
            raise CaptionError(f"Caption {i} ({text!r}) is empty or only spaces: the text encoder "
                               "needs at least one word, e.g. 'a red circle'.")
        if simple and n + 2 > context_length:
            too_long.append((i, text, n + 2))
    if too_long:
        i, text, n = too_long[0]
        more = f" ({len(too_long)} captions are too long; this is the first)" if len(too_long) > 1 else ""
        message = (f"Caption {i} has {n} tokens (start and end markers included) but the text "
                   f"encoder reads at most {context_length}{more}: {text!r}. Shorten it by "
                   f"{n - context_length} tokens (a word is usually one token), "
                   "or pass truncate=True to cut it.")
        if not truncate:
            raise CaptionError(message)
        warnings.warn("Cutting over-long captions. " + message, stacklevel=2)
    if simple:
        return tok(captions, context_length=context_length)
    return tok(captions)



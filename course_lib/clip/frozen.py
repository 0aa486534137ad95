"""For the generators: the frozen text encoder (pooled embedding, per-token states and
mask), image-tower features, and the world-token pruning of shipped references.
Used by notebooks 03-07 through ``course_lib.conditioning``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..text import _MODEL_TOKENIZERS, get_tokenizer, tokenize
from .embed import _device_of, _prepare_images

__all__ = ["FrozenTextEncoder", "image_intermediates"]


# =============================================================================
# 8. For the generators: a frozen text encoder, and image-tower features
# =============================================================================


class FrozenTextEncoder(nn.Module):
    """A CLIP text tower, frozen, as the generators of the course condition on it.

    Two views of a caption:

    * :meth:`pooled` -> ``(B, embed_dim)``: the caption's CLIP embedding (unit
      length by default), one vector per caption: what a GAN or unCLIP conditions on.
    * :meth:`tokens` -> ``(hidden (B, L, width), mask (B, L))``: the text transformer's
      last hidden state (after its final LayerNorm) for every token, and which
      positions hold real tokens (start marker .. end marker): what a diffusion
      UNet attends to with cross-attention. ``L`` is the context length.

    ``forward(captions)`` returns both as a dict. All parameters have
    ``requires_grad=False``, outputs carry no graph, and the module stays in eval
    mode even inside a model put in training mode. Keep it *beside* the model you
    train, not inside it, so the optimizer and its checkpoint never hold it.

    Args:
        model: a CLIP (the course's or a pretrained one).
        normalize: unit-length pooled embeddings.
    """

    def __init__(self, model: nn.Module, normalize: bool = True):
        super().__init__()
        self.clip = model
        self.normalize = normalize
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.clip.eval()

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        super().train(False)          # frozen: dropout etc. never come back on
        return self

    @property
    def context_length(self) -> int:
        return int(self.clip.context_length)

    @property
    def embed_dim(self) -> int:
        """Size of a pooled embedding."""
        return int(self.clip.text_projection.shape[1] if isinstance(self.clip.text_projection, torch.Tensor)
                   else self.clip.text_projection.out_features)

    @property
    def width(self) -> int:
        """Size of a per-token hidden state."""
        return int(self.clip.transformer.width)

    def tokenize(self, captions) -> torch.Tensor:
        """Token ids ``(B, L)`` on the encoder's device (checked like :func:`tokenize`)."""
        return tokenize(captions, self.context_length,
                        tokenizer=_MODEL_TOKENIZERS.get(self.clip)).to(_device_of(self.clip))

    @torch.no_grad()
    def forward(self, captions) -> dict[str, torch.Tensor]:
        """``{"pooled": (B, D), "tokens": (B, L, W), "mask": (B, L) bool}``."""
        ids = self.tokenize(captions)
        out = self.clip.forward_intermediates(text=ids, text_indices=1, normalize=self.normalize,
                                              normalize_intermediates=True)
        eot = ids.argmax(dim=-1)      # the end marker has the largest id in the vocabulary
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] <= eot[:, None]
        return {"pooled": out["text_features"], "tokens": out["text_intermediates"][-1], "mask": mask}

    def pooled(self, captions) -> torch.Tensor:
        """Captions -> ``(B, embed_dim)`` embeddings (unit length if ``normalize``)."""
        return self(captions)["pooled"]

    def tokens(self, captions) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> ``(hidden (B, L, width), mask (B, L) bool)``."""
        out = self(captions)
        return out["tokens"], out["mask"]


def image_intermediates(model: nn.Module, images, *, indices: int | Sequence[int] | None = None,
                        grad: bool = False, normalize_intermediates: bool = False
                        ) -> dict[str, Any]:
    """The image tower's per-layer features, via open_clip's ``forward_intermediates``.

    Args:
        model: a CLIP with a ViT image tower (the course's, or a pretrained ViT).
        images: float ``(N, 3, H, W)`` in [-1, 1] (resized/normalised for the model).
        indices: which blocks: an int n = the last n, a list = those block indices,
            None = all.
        grad: keep the graph (e.g. a discriminator on CLIP features of fake images).
        normalize_intermediates: apply the tower's final LayerNorm to each.

    Returns:
        ``{"image_intermediates": [ (N, width, H/patch, W/patch) per block ],
        "image_features": (N, embed_dim) unit-length embedding}``.
    """
    x = _prepare_images(model, images)
    with torch.set_grad_enabled(grad):
        return model.forward_intermediates(image=x, image_indices=indices, normalize=True,
                                           normalize_intermediates=normalize_intermediates)


# ----------------------------------------------------------------------------- references


def world_token_ids() -> list[int]:
    """Every token id a caption or prompt of the course's world can contain (sorted).

    CLIP's byte-pair tokenizer encodes word by word, so the tokens of every word and
    punctuation mark of the world's templates and synonym lists, plus the start, end and
    padding tokens, are all the tokens its captions use: ~90 of the 49,408 rows of the
    token table."""
    from ..data import world
    tok = get_tokenizer()
    texts = [re.sub(r"\{\w+\}", " ", t) for t in world.TEMPLATES + world.RELATION_TEMPLATES]
    for table in (world.SHAPE_WORDS, world.COLOR_WORDS, world.SIZE_WORDS, world.POSITION_WORDS,
                  world.POSITION_LABELS, world.RELATION_WORDS):
        texts += [" ".join(words) for words in table.values()]
    texts.append("an shape")          # _tidy's article; a partial prompt's missing shape
    ids = {0, tok.sot_token_id, tok.eot_token_id}
    for text in texts:
        ids.update(tok.encode(text))
    return sorted(ids)


def keep_world_tokens(state: Mapping[str, torch.Tensor]) -> None:
    """Zero, in place, the rows of a CLIP state's token table that no world caption uses.

    For a shipped reference (``python -m course_lib.train ... --reference``): the course's
    CLIP never sees the other ~49,300 tokens, so their rows are still their random start;
    as zeros they cost nothing in the shipped file (checkpoints store all-zero rows sparsely),
    and the course CLIP goes from ~15 MB to ~3 MB in fp16. Words outside the world then all
    map to the same zero vector, instead of each to its own untrained random one."""
    keep = torch.tensor(world_token_ids())
    with torch.no_grad():
        for key in [k for k in state if k.endswith("token_embedding.weight")]:
            table = state[key]
            mask = torch.ones(table.shape[0], dtype=torch.bool, device=table.device)
            mask[keep.to(table.device)] = False
            table[mask] = 0

"""Stand-ins shared by the unit tests: a tiny real CLIP's config and a fake text encoder.

One copy here instead of one per test file, so a change to what a generator asks of its
text encoder is made once."""
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from course_lib import clip

#: a tiny open_clip CLIP (2 blocks of width 32 per tower, a 4x4 grid on 32x32 images): built
#: untrained, it encodes in milliseconds
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
             "text_cfg": {"context_length": 24, "vocab_size": clip.VOCAB_SIZE, "width": 32, "heads": 2,
                          "layers": 2}}

#: changes to the smoke profile that make every registered model train in a second or two
#: (16-pixel images, 64 training images, 2 steps): the contract and interruption tests
TINY_PROFILE = dict(
    data={"image_size": 16, "n_train": 64, "n_val": 32, "n_test": 32, "n_heldout": 16, "batch_size": 16},
    clip={"embed_dim": 16, "vision_width": 16, "vision_layers": 1, "vision_heads": 2, "patch_size": 8,
          "text_width": 16, "text_layers": 1, "text_heads": 2, "steps": 3, "batch_size": 16,
          "warmup_steps": 1},
    gan={"noise_dim": 8, "g_width": 8, "d_width": 8, "n_train": 64, "batch_size": 8, "steps": 2},
    galip={"noise_dim": 8, "code_channels": 8, "g_width": 8, "d_channels": 8, "n_train": 64,
           "batch_size": 8, "steps": 2, "probes": 0},
    vae={"latent_dim": 4, "width": 8, "text_dim": 8, "steps": 2, "batch_size": 16},
    autoencoder={"block_out_channels": (8, 8), "steps": 2, "batch_size": 16},
    diffusion={"block_out_channels": (16, 32), "n_train": 64, "batch_size": 8, "steps": 2,
               "sample_steps": 2, "ema_decay": 0.0},
    prior={"layers": 1, "heads": 2, "head_dim": 8, "n_train": 64, "batch_size": 8, "steps": 2,
           "sample_steps": 2, "ema_decay": 0.0},
    decoder={"steps": 2, "sample_steps": 2},
)


def _seeded(caption: str, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(caption.encode()) + 7919 * salt)


class FakeTextEncoder(nn.Module):
    """Stands in for ``course_lib.clip.FrozenTextEncoder``: a fixed unit embedding (``pooled``)
    and fixed token states (``tokens``) per caption, captions checked by the real tokenizer
    (so a too-long caption fails as it does for real). ``seed`` makes another "CLIP", with
    its own fingerprint."""

    def __init__(self, embed_dim: int = 8, width: int = 16, context_length: int = 12, seed: int = 0,
                 fingerprint: str | None = None):
        super().__init__()
        self.embed_dim, self.width, self.context_length, self.seed = embed_dim, width, context_length, seed
        self.clip = nn.Linear(2, 2)
        self.fingerprint = fingerprint or (f"fake{seed}" if seed else "fake")

    def dependency(self) -> dict:
        """What a generator's config records of this encoder (``conditioning.clip_dependency``)."""
        return {"embed_dim": self.embed_dim, "width": self.width, "context_length": self.context_length,
                "fingerprint": self.fingerprint}

    def pooled(self, captions):
        clip.tokenize(captions, self.context_length)
        rows = [torch.randn(self.embed_dim, generator=_seeded(c, 2 * self.seed + 1)) for c in captions]
        return F.normalize(torch.stack(rows), dim=-1)

    def tokens(self, captions):
        clip.tokenize(captions, self.context_length)
        states, masks = [], []
        for c in captions:
            states.append(torch.randn(self.context_length, self.width, generator=_seeded(c, 2 * self.seed)))
            masks.append(torch.arange(self.context_length) < min(self.context_length, len(c.split()) + 2))
        return torch.stack(states), torch.stack(masks)

    def forward(self, captions):
        tokens, mask = self.tokens(captions)
        return {"pooled": self.pooled(captions), "tokens": tokens, "mask": mask}

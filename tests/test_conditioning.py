"""course_lib.conditioning: what every generator shares."""
import pytest
import torch
from fakes import TINY_CLIP

from course_lib import clip, conditioning
from course_lib.images import ImageBatchError


def test_fingerprint_is_stable_and_sees_any_weight_change():
    torch.manual_seed(0)
    a = clip.build_clip(TINY_CLIP)
    fp = conditioning.clip_fingerprint(a)
    assert fp == conditioning.clip_fingerprint(a) and len(fp) == 12
    with torch.no_grad():
        a.visual.conv1.weight[0, 0, 0, 0] += 1e-3
    assert conditioning.clip_fingerprint(a) != fp


def test_the_dependency_records_sizes_and_fingerprint():
    enc = clip.FrozenTextEncoder(clip.build_clip(TINY_CLIP))
    dep = conditioning.clip_dependency(enc)
    assert dep["embed_dim"] == 16 and dep["width"] == 32 and dep["context_length"] == 24
    assert dep["fingerprint"] == conditioning.clip_fingerprint(enc.clip)


def test_an_attached_encoder_is_not_part_of_the_model():
    enc = clip.FrozenTextEncoder(clip.build_clip(TINY_CLIP))
    model = torch.nn.Linear(2, 2)
    conditioning.attach_text_encoder(model, enc)
    assert conditioning.get_text_encoder(model) is enc
    assert set(model.state_dict()) == {"weight", "bias"} and len(list(model.parameters())) == 2


def test_captions_are_checked():
    assert conditioning.check_captions("a red circle") == ["a red circle"]
    assert conditioning.check_captions(("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError, match="dict"):
        conditioning.check_captions({"a red circle": 1})
    with pytest.raises(TypeError, match="NoneType"):
        conditioning.check_captions(None)
    with pytest.raises(ValueError, match="caption 0 is empty"):
        conditioning.check_captions([""])


def test_finish_samples_clamps_and_checks():
    x = torch.tensor([[[[-1.3, 1.2]]]]).expand(1, 3, 1, 2)
    y = conditioning.finish_samples(x)
    assert float(y.min()) == -1.0 and float(y.max()) == 1.0
    with pytest.raises(ImageBatchError, match="NaN"):
        conditioning.finish_samples(torch.full((1, 3, 2, 2), float("nan")))



def test_a_caption_of_invisible_characters_is_empty_for_the_tokenizer_too():
    from course_lib import text
    for blank in ("", "   ", "\u200b", "\ufeff\u2060 \u200d"):
        assert text.is_blank(blank)
        with pytest.raises(text.CaptionError, match="empty"):
            text.tokenize([blank], 16)
    assert not text.is_blank("a red\u200b circle")

"""The package's one image check (course_lib.images): every bad batch gets a message with its fix."""
import numpy as np
import pytest
import torch

from course_lib.images import ImageBatchError, check_images, clamp_images


def test_course_images_pass_unchanged():
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    assert torch.equal(check_images(x), x)
    assert check_images(torch.zeros(2, 3, 4, 4)).shape == (2, 3, 4, 4)      # constant grey is fine


def test_uint8_pixels_are_converted():
    pixels = np.full((2, 8, 8, 3), 255, dtype=np.uint8)
    x = check_images(pixels)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32 and float(x.min()) == 1.0


@pytest.mark.parametrize("bad, pattern", [
    (torch.rand(2, 3, 8, 8), r"\[0, 1\] images.*x \* 2 - 1"),
    (torch.rand(2, 3, 8, 8) * 255, r"outside \[-1, 1\].*x / 127.5 - 1"),
    (torch.full((1, 3, 4, 4), 1.01), r"outside \[-1, 1\].*clamp_images"),
    (torch.full((1, 3, 4, 4), float("nan")), "NaN"),
    (torch.full((1, 3, 4, 4), float("inf")), "NaN or infinite"),
    (torch.zeros(0, 3, 8, 8), r"no images \(N = 0\)"),
    (torch.zeros(3, 8, 8), r"images\[None\]"),
    (torch.zeros(2, 8, 8, 3), "permute"),
    (torch.zeros(2, 1, 8, 8), "Grey"),
    (torch.zeros(2, 4, 8, 8), "RGBA"),
    (np.zeros((2, 8, 8), dtype=np.uint8), r"\(N, H, W, 3\)"),
])
def test_bad_batches_name_the_fix(bad, pattern):
    with pytest.raises(ImageBatchError, match=pattern):
        check_images(bad)


def test_wrong_types_and_sizes():
    with pytest.raises(TypeError, match="tensor or NumPy"):
        check_images([[0.0]])
    with pytest.raises(TypeError, match="int64"):
        check_images(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ImageBatchError, match="16x16 but 32x32"):
        check_images(torch.zeros(1, 3, 16, 16), size=32)
    assert check_images(torch.rand(1, 3, 4, 4), allow_unit_range=True).shape == (1, 3, 4, 4)
    assert check_images(torch.zeros(3, 4, 4), single=True).shape == (1, 3, 4, 4)


def test_clamp_keeps_nan_visible():
    x = torch.tensor([[-1.5, 0.2, float("nan")]])
    y = clamp_images(x)
    assert y[0, 0] == -1 and y[0, 1] == pytest.approx(0.2) and torch.isnan(y[0, 2])

"""Tests of ImageTextFolder (course_lib.data.folder): captions files, bad inputs
and image conversion. Every image is a tiny file written with PIL into tmp_path."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.data import FolderError, ImageTextFolder, make_loader
from course_lib.data.folder import load_image


def save(path, mode="RGB", size=(20, 20), color=(255, 0, 0), **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **kwargs)
    return path


def write_csv(root, text, name="captions.csv"):
    (root / name).write_text(text, encoding="utf-8")
    return root / name


@pytest.fixture
def folder(tmp_path):
    """Three images and a captions.csv."""
    save(tmp_path / "red.png", color=(255, 0, 0))
    save(tmp_path / "sub" / "green.jpg", color=(0, 255, 0))
    save(tmp_path / "blue.png", size=(40, 30), color=(0, 0, 255))
    write_csv(tmp_path, "file,caption\nred.png,a red square\nsub/green.jpg,\"green, all green\"\n"
                        "blue.png,a blue picture\n")
    return tmp_path


def pixel(ds, index=0):
    """The centre pixel of an item as uint8 RGB."""
    image = ds[index][0]
    return tuple(int(v) for v in torch.round((image[:, image.shape[1] // 2, image.shape[2] // 2]
                                              + 1) * 127.5))


# ---------------------------------------------------------------------------
# captions files
# ---------------------------------------------------------------------------

def test_csv_folder(folder):
    ds = ImageTextFolder(folder)
    assert len(ds) == 3
    image, caption, attrs = ds[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert -1 <= image.min() and image.max() <= 1
    assert caption == "green, all green" and attrs == {}
    assert pixel(ds, 0)[0] > 250 and pixel(ds, 0)[1] < 5
    images, captions, _ = ds.batch([0, 2])
    assert images.shape == (2, 3, 32, 32) and captions == ["a red square", "a blue picture"]


def test_works_with_a_dataloader(folder):
    batch = next(iter(make_loader(ImageTextFolder(folder), batch_size=2, num_workers=0)))
    images, captions, attrs = batch
    assert images.shape == (2, 3, 32, 32) and len(captions) == 2 and attrs == {}


def test_image_column_bom_extra_columns_and_blank_lines(tmp_path):
    save(tmp_path / "a.png")
    (tmp_path / "captions.csv").write_text("\ufeffImage, Caption ,notes\n\na.png,  a red thing ,x\n",
                                           encoding="utf-8")
    ds = ImageTextFolder(tmp_path)
    assert ds.captions == ["a red thing"]


def test_jsonl_folder(tmp_path):
    save(tmp_path / "a.png")
    save(tmp_path / "b.png", color=(0, 0, 255))
    lines = [json.dumps({"file": "a.png", "caption": "red"}), "",
             json.dumps({"image": "b.png", "caption": "blue"})]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    ds = ImageTextFolder(tmp_path)
    assert ds.captions == ["red", "blue"]


def test_explicit_captions_file(folder, tmp_path):
    write_csv(folder, "file,caption\nred.png,only red\n", name="other.csv")
    assert ImageTextFolder(folder, captions_file="other.csv").captions == ["only red"]
    assert ImageTextFolder(folder, captions_file=folder / "other.csv").captions == ["only red"]


def test_duplicates_are_fine(folder):
    write_csv(folder, "file,caption\nred.png,a red square\nred.png,something red\n")
    ds = ImageTextFolder(folder)
    assert len(ds) == 2 and torch.equal(ds[0][0], ds[1][0])


def test_missing_captions_file(tmp_path):
    save(tmp_path / "a.png")
    with pytest.raises(FolderError, match="captions.csv"):
        ImageTextFolder(tmp_path)
    with pytest.raises(FolderError, match="nothere.csv"):
        ImageTextFolder(tmp_path, captions_file="nothere.csv")
    with pytest.raises(FolderError, match="does not exist"):
        ImageTextFolder(tmp_path / "missing_folder")


def test_unknown_extension(folder):
    (folder / "captions.txt").write_text("red.png a red square\n")
    with pytest.raises(FolderError, match=r"\.txt.*\.csv"):
        ImageTextFolder(folder, captions_file="captions.txt")


def test_missing_column(folder):
    write_csv(folder, "name,text\nred.png,a red square\n")
    with pytest.raises(FolderError, match="file,caption"):
        ImageTextFolder(folder)
    write_csv(folder, "file,text\nred.png,a red square\n")
    with pytest.raises(FolderError, match="'caption'"):
        ImageTextFolder(folder)


def test_empty_files(folder):
    write_csv(folder, "")
    with pytest.raises(FolderError, match="empty"):
        ImageTextFolder(folder)
    write_csv(folder, "file,caption\n")
    with pytest.raises(FolderError, match="no images"):
        ImageTextFolder(folder)


@pytest.mark.parametrize("caption", ["", "   ", "\t"])
def test_empty_caption_names_the_line(folder, caption):
    write_csv(folder, f"file,caption\nred.png,a red square\nblue.png,{caption}\n")
    with pytest.raises(FolderError, match=r"line 3.*'blue.png'"):
        ImageTextFolder(folder)


def test_short_csv_row_names_the_line(folder):
    write_csv(folder, "file,caption\nred.png\n")
    with pytest.raises(FolderError, match="line 2"):
        ImageTextFolder(folder)


def test_jsonl_errors_name_the_line(tmp_path):
    save(tmp_path / "a.png")
    path = tmp_path / "captions.jsonl"
    path.write_text('{"file": "a.png", "caption": "red"}\n{"file": "a.png", "caption": \n')
    with pytest.raises(FolderError, match="line 2.*not valid JSON"):
        ImageTextFolder(tmp_path)
    path.write_text('{"file": "a.png", "text": "red"}\n')
    with pytest.raises(FolderError, match="line 1.*'caption'"):
        ImageTextFolder(tmp_path)
    path.write_text('["a.png", "red"]\n')
    with pytest.raises(FolderError, match="line 1"):
        ImageTextFolder(tmp_path)
    path.write_text('{"file": "a.png", "caption": "  "}\n')
    with pytest.raises(FolderError, match="line 1.*empty"):
        ImageTextFolder(tmp_path)


def test_missing_images_listed_in_one_error(folder):
    names = [f"gone{i}.png" for i in range(7)]
    write_csv(folder, "file,caption\nred.png,red\n" + "".join(f"{n},lost\n" for n in names))
    with pytest.raises(FolderError) as info:
        ImageTextFolder(folder)
    message = str(info.value)
    assert "7 image file(s)" in message and "'gone0.png' (line 3)" in message
    assert "gone4.png" in message and "gone6.png" not in message and "2 more" in message


def test_a_path_leading_out_of_the_folder_is_refused_with_its_line(folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")
    save(outside / "outside.png")
    for written in (f"../{outside.name}/outside.png", str(outside / "outside.png")):
        if not written.startswith("/"):      # relative: a sibling folder of the image folder
            save(folder.parent / outside.name / "outside.png")
        write_csv(folder, f"file,caption\nred.png,red\n{written},a cat\n")
        with pytest.raises(FolderError, match=r"line 3: .* lies outside the folder"):
            ImageTextFolder(folder)
    write_csv(folder, f"file,caption\n{folder / 'red.png'},red\n")          # absolute, but inside: fine
    assert len(ImageTextFolder(folder)) == 1


# ---------------------------------------------------------------------------
# broken images
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_image_names_the_file(folder, damage):
    path = folder / "red.png"
    if damage == "garbage":
        path.write_bytes(b"not an image at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:
        path.write_bytes(b"")
    with pytest.raises(FolderError, match="red.png"):
        ImageTextFolder(folder)
    lazy = ImageTextFolder(folder, verify=False)            # found only when used
    assert lazy[2][1] == "a blue picture"
    with pytest.raises(FolderError, match="red.png"):
        lazy[0]


# ---------------------------------------------------------------------------
# image modes and sizes
# ---------------------------------------------------------------------------

def one_image(tmp_path, image: Image.Image, name="x.png", image_size=8, **save_args):
    image.save(tmp_path / name, **save_args)
    write_csv(tmp_path, f"file,caption\n{name},a test image\n")
    return ImageTextFolder(tmp_path, image_size=image_size)


def test_grayscale_and_bilevel(tmp_path):
    assert pixel(one_image(tmp_path, Image.new("L", (8, 8), 100))) == (100, 100, 100)
    assert pixel(one_image(tmp_path, Image.new("1", (8, 8), 1), name="b.png")) == (255,) * 3


def test_palette(tmp_path):
    image = Image.new("RGB", (8, 8), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert pixel(one_image(tmp_path, image, name="p.png")) == (10, 200, 30)


def test_palette_with_transparency_is_over_white(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0] * 256)
    ds = one_image(tmp_path, image, name="p.png", transparency=0)
    assert pixel(ds) == (255, 255, 255)


def test_alpha_is_composited_over_white(tmp_path):
    assert pixel(one_image(tmp_path, Image.new("RGBA", (8, 8), (255, 0, 0, 0)))) == (255,) * 3
    half = pixel(one_image(tmp_path, Image.new("RGBA", (8, 8), (255, 0, 0, 128)), name="h.png"))
    assert half[0] == 255 and 125 <= half[1] <= 129 and half[1] == half[2]
    assert pixel(one_image(tmp_path, Image.new("LA", (8, 8), (0, 255)), name="la.png")) == (0,) * 3


def test_16_bit_is_scaled_not_clipped(tmp_path):
    values = np.full((8, 8), 40000, dtype=np.uint16)
    ds = one_image(tmp_path, Image.fromarray(values), name="deep.png")     # a 16-bit PNG
    assert pixel(ds) == (156,) * 3                                         # 40000 / 257
    white = one_image(tmp_path, Image.fromarray(np.full((8, 8), 65535, np.uint16)), name="w.png")
    assert pixel(white) == (255,) * 3


def test_32_bit_and_float_images(tmp_path):
    eight_bit = Image.fromarray(np.full((8, 8), 200, dtype=np.int32), mode="I")
    assert pixel(one_image(tmp_path, eight_bit, name="i8.tiff")) == (200,) * 3
    sixteen = Image.fromarray(np.full((8, 8), 40000, dtype=np.int32), mode="I")
    assert pixel(one_image(tmp_path, sixteen, name="i16.tiff")) == (156,) * 3
    unit = Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), mode="F")
    assert pixel(one_image(tmp_path, unit, name="f.tiff")) == (128,) * 3


def test_cmyk(tmp_path):
    ds = one_image(tmp_path, Image.new("CMYK", (8, 8), (0, 255, 255, 0)), name="c.jpg", quality=95)
    red = pixel(ds)
    assert red[0] > 230 and red[1] < 30 and red[2] < 30


def test_any_size_is_centre_cropped_and_resized(tmp_path):
    wide = np.zeros((20, 60, 3), dtype=np.uint8)
    wide[:, :20] = (255, 0, 0)                     # left third red
    wide[:, 20:40] = (0, 255, 0)                   # middle third green: the centre square
    wide[:, 40:] = (0, 0, 255)
    image = load_image(_save_array(tmp_path / "wide.png", wide), image_size=16)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert (image[..., 1] > 240).all() and (image[..., 0] < 15).all() and (image[..., 2] < 15).all()
    tall = load_image(_save_array(tmp_path / "tall.png", wide.transpose(1, 0, 2)), image_size=16)
    assert (tall[..., 1] > 240).all()
    big = load_image(save(tmp_path / "big.png", size=(300, 200)), image_size=64)
    assert big.shape == (64, 64, 3)


def _save_array(path, array):
    Image.fromarray(array).save(path)
    return path


def test_image_size_parameter(folder):
    ds = ImageTextFolder(folder, image_size=16)
    assert ds[0][0].shape == (3, 16, 16)


def test_tiny_images_warn(tmp_path):
    save(tmp_path / "tiny.png", size=(4, 4))
    write_csv(tmp_path, "file,caption\ntiny.png,a tiny image\n")
    with pytest.warns(UserWarning, match="tiny.png"):
        ds = ImageTextFolder(tmp_path, image_size=32)
    assert ds[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("size", [0, -3, 2.5, None])
def test_a_bad_image_size_blames_the_size_not_an_image(folder, size):
    """Item 5."""
    with pytest.raises(ValueError, match="image_size must be a positive whole number"):
        ImageTextFolder(folder, image_size=size)
    with pytest.raises(ValueError, match="image_size must be a positive whole number"):
        load_image(folder / "red.png", size)


# ----------------------------------------------------------------------------- item 3


def test_an_unquoted_comma_names_the_line_and_how_to_quote(folder):
    write_csv(folder, "file,caption\nred.png,a red square\nblue.png,a blue, flat picture\n")
    with pytest.raises(FolderError, match=r'line 3: 3 cells, but the header has 2.*'
                                          r'blue.png,"a blue, flat picture"'):
        ImageTextFolder(folder)


def test_a_captions_file_that_is_not_utf8_names_the_file_and_line(folder):
    (folder / "captions.csv").write_bytes("file,caption\nred.png,a red square\nblue.png,a café\n"
                                          .encode("latin-1"))
    with pytest.raises(FolderError, match=r"captions.csv, line 3: the file is not UTF-8 text"):
        ImageTextFolder(folder)


@pytest.mark.parametrize("record, what", [
    ({"file": "red.png", "caption": 3}, "caption is a int"),
    ({"file": "red.png", "caption": ["a", "red"]}, "caption is a list"),
    ({"file": 7, "caption": "a red square"}, "file name is a int"),
])
def test_jsonl_values_that_are_not_strings_are_errors(folder, record, what):
    (folder / "captions.jsonl").write_text('{"file": "blue.png", "caption": "a blue one"}\n'
                                           + json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(FolderError, match=f"line 2: the {what}"):
        ImageTextFolder(folder, captions_file="captions.jsonl")


def test_an_over_long_caption_is_reported_at_load_time_with_its_line(folder):
    long = "a small red circle to the left of a large blue square " * 3
    write_csv(folder, f"file,caption\nred.png,a red square\nblue.png,{long}\n")
    with pytest.raises(FolderError, match=r"line 3 \(\d+ tokens\).*context_length="):
        ImageTextFolder(folder, context_length=24)
    assert len(ImageTextFolder(folder, context_length=77)) == 2       # a pretrained CLIP's context
    assert len(ImageTextFolder(folder, context_length=0)) == 2        # no check

"""ImageTextFolder: your own images and captions, used like the generated world.

Put images in a folder with a captions file next to them, then use the folder
wherever the course uses a ``WorldDataset`` (CLIP training, generators)::

    my_pictures/
        captions.csv        file,caption
        cat.png             cat.png,a black cat on a sofa
        photos/dog.jpg      photos/dog.jpg,a dog in the snow

Explained in notebook 00, section "Your own images".

Captions file
-------------
* CSV with a header line: columns ``file,caption`` (``image`` may replace
  ``file``); other columns are ignored. Quote captions that contain commas
  (a line with more cells than the header is an error that names it).
* or JSON Lines (``.jsonl``): one object per line, ``{"file": ..., "caption": ...}``;
  the file and the caption must be JSON strings.
* UTF-8 text (an Excel BOM is fine); anything else is an error naming the line.
* Every caption must fit the text encoder (``context_length`` tokens, by default
  the profile's CLIP): an over-long caption is reported at load time, with its line.
* Without ``captions_file`` the folder's ``captions.csv`` or ``captions.jsonl`` is used.
* File paths are relative to the folder (an absolute path works if it lies inside it; a path
  that leads out of the folder is an error naming its line). A file may be
  listed several times with different captions: each line is one item.

How images are converted
------------------------
* Every mode becomes RGB: grayscale (L, 1) is repeated on 3 channels; palette
  (P) images are expanded; images with transparency (RGBA, LA, PA, P with a
  transparent colour) are composited over a WHITE background; 16-bit images
  (I;16) are scaled to 8 bits (value / 257, so 65535 -> 255, nothing clipped);
  32-bit integer (I) and float (F) images are scaled likewise (see
  :func:`to_rgb`); CMYK and others use Pillow's conversion.
* The EXIF orientation of photos is applied; of animations and multi-page
  files only the first frame is used.
* Any size: the largest centred square is cropped, then resized to
  ``image_size`` x ``image_size`` (Lanczos filter). With ``verify=True``, images
  smaller than a quarter of ``image_size`` give a warning (they will look blurry).
"""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..images import to_float

__all__ = ["ImageTextFolder", "FolderError", "read_captions", "load_image", "to_rgb",
           "CAPTION_FILE_NAMES"]

#: Looked for, in this order, when no captions file is given.
CAPTION_FILE_NAMES = ("captions.csv", "captions.jsonl")
FILE_COLUMNS = ("file", "image")
#: Missing or unreadable files listed in one error message, at most.
MAX_LISTED = 5


class FolderError(ValueError):
    """A problem with the captions file or the images of an ImageTextFolder.

    The message names the file (and line) and says how to fix it.
    """


# ---------------------------------------------------------------------------
# Reading the captions file
# ---------------------------------------------------------------------------

def find_captions_file(root: Path, captions_file=None) -> Path:
    """The captions file to read: the given one, or captions.csv / .jsonl in ``root``."""
    if captions_file is not None:
        path = Path(captions_file)
        if not path.is_absolute() and not path.exists():
            path = root / path
        if not path.is_file():
            raise FolderError(f"Captions file {captions_file} not found (looked at {path}). "
                              "Give the path of an existing .csv or .jsonl file.")
        return path
    for name in CAPTION_FILE_NAMES:
        if (root / name).is_file():
            return root / name
    raise FolderError(f"No captions file in {root}: looked for {', '.join(CAPTION_FILE_NAMES)}. "
                      "Create captions.csv with the header line 'file,caption' and one line per "
                      "image, or pass captions_file=...")


def read_captions(path: str | Path) -> list[tuple[str, str, int]]:
    """The entries of a captions file.

    Args:
        path: a .csv or .jsonl file (see the module docstring for the format).

    Returns:
        list of (file as written, caption, line number), in file order.

    Raises:
        FolderError: unknown extension, missing column, empty caption (naming the line).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise FolderError(f"Captions file {path} has the extension {suffix or '(none)'!r}; "
                          "use a .csv file (header 'file,caption') or a .jsonl file "
                          "(lines like {\"file\": \"cat.png\", \"caption\": \"a cat\"}).")
    try:
        entries = _read_csv(path) if suffix == ".csv" else _read_jsonl(path)
    except UnicodeDecodeError as err:
        raw = path.read_bytes()
        line = raw[:err.start].count(b"\n") + 1
        raise FolderError(
            f"{path}, line {line}: the file is not UTF-8 text (byte {raw[err.start:err.start + 1]!r} "
            f"at position {err.start}). Save it as UTF-8: in Excel 'CSV UTF-8', in a text editor "
            "'Save with encoding: UTF-8'.") from None
    if not entries:
        raise FolderError(f"Captions file {path} lists no images. Add one line per image.")
    return entries


def _check_entry(path: Path, line: int, file, caption) -> tuple[str, str, int]:
    """One entry, with a clear error for an empty or non-text file name or caption."""
    for what, value in (("file name", file), ("caption", caption)):
        if value is not None and not isinstance(value, str):
            raise FolderError(f"{path}, line {line}: the {what} is a {type(value).__name__} "
                              f"({json.dumps(value)}), not text. Write it as a JSON string in "
                              f"double quotes, e.g. \"caption\": \"a red circle\".")
    file = "" if file is None else str(file).strip()
    caption = "" if caption is None else str(caption).strip()
    if not file:
        raise FolderError(f"{path}, line {line}: the file name is empty. "
                          "Write the image's path (relative to the folder) or delete the line.")
    if not caption:
        raise FolderError(f"{path}, line {line}: the caption of {file!r} is empty. "
                          "Write a caption for it or delete the line.")
    return file, caption, line


def _read_csv(path: Path) -> list[tuple[str, str, int]]:
    with open(path, newline="", encoding="utf-8-sig") as f:    # -sig: ignore an Excel BOM
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise FolderError(f"Captions file {path} is empty. Its first line must be the header "
                              "'file,caption'.")
        columns = [name.strip().lower() for name in header]
        file_column = next((c for c in FILE_COLUMNS if c in columns), None)
        if file_column is None or "caption" not in columns:
            missing = "caption" if file_column else "file"
            raise FolderError(f"{path}, line 1: no {missing!r} column (the header has "
                              f"{header}). The first line must be the header 'file,caption' "
                              "(or 'image,caption').")
        i_file, i_caption = columns.index(file_column), columns.index("caption")
        entries = []
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue                                            # blank line
            if len(row) > len(columns):
                raise FolderError(
                    f"{path}, line {line}: {len(row)} cells, but the header has {len(columns)} "
                    f"({', '.join(header)}). A caption that contains a comma must be in double "
                    f"quotes, e.g. {row[i_file]},\"{','.join(row[i_caption:])}\" -- otherwise "
                    "the text after the comma is lost.")
            cells = row + [""] * (len(columns) - len(row))
            entries.append(_check_entry(path, line, cells[i_file], cells[i_caption]))
    return entries


def _read_jsonl(path: Path) -> list[tuple[str, str, int]]:
    entries = []
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue                                            # blank line
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise FolderError(f"{path}, line {line}: not valid JSON ({err.msg}). Each line "
                                  "must look like {\"file\": \"cat.png\", \"caption\": \"a cat\"}."
                                  ) from None
            if not isinstance(record, dict):
                raise FolderError(f"{path}, line {line}: expected a JSON object like "
                                  "{\"file\": \"cat.png\", \"caption\": \"a cat\"}.")
            file_key = next((k for k in FILE_COLUMNS if k in record), None)
            if file_key is None or "caption" not in record:
                missing = "caption" if file_key else "file"
                raise FolderError(f"{path}, line {line}: no {missing!r} key (keys: "
                                  f"{sorted(record)}). Each line needs \"file\" and \"caption\".")
            entries.append(_check_entry(path, line, record[file_key], record["caption"]))
    return entries


# ---------------------------------------------------------------------------
# Reading and converting images
# ---------------------------------------------------------------------------

def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image -> RGB (see the module docstring for the rules).

    * transparency (RGBA, LA, PA, P or L with a transparent colour): over white;
    * I;16 (16-bit): value / 257;
    * I (32-bit int): values up to 255 are kept, up to 65535 divided by 257,
      anything else (negative or larger) rescaled min..max -> 0..255;
    * F (float): values in [0, 1] times 255, else rescaled min..max -> 0..255;
    * everything else (L, 1, P, CMYK, YCbCr, ...): Pillow's ``convert("RGB")``.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64) / 257.0
        return _gray_array_to_rgb(values)
    if mode == "I":
        values = np.asarray(image, dtype=np.float64)
        low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
        if low >= 0 and high <= 255:
            pass                                   # already 8-bit values
        elif low >= 0 and high <= 65535:
            values = values / 257.0                # 16-bit values
        else:
            values = _rescale(values)
        return _gray_array_to_rgb(values)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            values = values * 255.0
        else:
            values = _rescale(values)
        return _gray_array_to_rgb(np.nan_to_num(values))
    return image.convert("RGB")


def _rescale(values: np.ndarray) -> np.ndarray:
    """Stretch min..max to 0..255 (a constant image becomes 0)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    low, high = finite.min(), finite.max()
    return (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)


def _gray_array_to_rgb(values: np.ndarray) -> Image.Image:
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1))


def center_square(image: Image.Image) -> Image.Image:
    """The largest square in the middle of the image."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def _check_image_size(image_size) -> int:
    """``image_size`` as an int, or a ValueError that blames it (not an image)."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size <= 0:
        raise ValueError(f"image_size must be a positive whole number of pixels (e.g. 32), "
                         f"not {image_size!r}.")
    return int(image_size)


def load_image(path: str | Path, image_size: int = 32) -> np.ndarray:
    """Read one image and make it like the world's: uint8 (image_size, image_size, 3).

    Args:
        path: an image file Pillow can read.
        image_size: side of the result in pixels.

    Raises:
        FolderError: the file cannot be read as an image (naming it).
        ValueError: ``image_size`` is not a positive whole number.
    """
    image_size = _check_image_size(image_size)
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.seek(0)                          # first frame of an animation
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = to_rgb(image)
            square = center_square(rgb)
            if square.size[0] == 0:
                raise ValueError("the image has no pixels")
            resized = square.resize((image_size, image_size), Image.Resampling.LANCZOS)
            return np.asarray(resized, dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise FolderError(f"Cannot read the image {path}: {type(err).__name__}: {err}. "
                          "Open it in an image viewer; re-save it as PNG or JPEG, "
                          "or delete its line from the captions file.") from None


# ---------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------

class ImageTextFolder(Dataset):
    """Your own images with captions, as a Dataset like :class:`WorldDataset`.

    Items are ``(image, caption, {})``: image a float32 (3, H, W) tensor in
    [-1, 1], caption a str, and an empty attributes dict (your images have no
    known attributes).

    Args:
        root: the folder with the images.
        captions_file: a .csv or .jsonl file (relative to ``root`` or absolute);
            None: ``root``/captions.csv or ``root``/captions.jsonl.
        image_size: side in pixels of the (centre-cropped, resized) images.
        verify: read every image now, so that a broken file is reported at once
            (and keep the converted images in memory). False: read each image
            when it is first used.
        context_length: the most tokens a caption may have (start and end markers
            included): None for the active profile's CLIP
            (``profile.clip.context_length``), e.g. 77 for a pretrained CLIP, 0 for
            no check. Over-long captions are reported here with their lines, not
            later by training with a batch position.

    Raises:
        FolderError: with the file, the line and the fix: no captions file,
            unknown extension, missing column, empty caption, missing image
            files (all listed in one error), unreadable images, captions longer
            than ``context_length`` tokens (all listed in one error).
    """

    def __init__(self, root: str | Path, captions_file: str | Path | None = None,
                 image_size: int = 32, verify: bool = True, context_length: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FolderError(f"Image folder {self.root} does not exist (or is not a folder).")
        self.image_size = _check_image_size(image_size)
        self.captions_file = find_captions_file(self.root, captions_file)
        entries = read_captions(self.captions_file)
        self.files = [self._resolve(file, line) for file, _, line in entries]
        #: The caption of every item, in file order.
        self.captions = [caption for _, caption, _ in entries]
        self.lines = [line for _, _, line in entries]
        self._check_files_exist(entries)
        self._check_token_lengths(context_length)
        self._cache: dict[Path, np.ndarray] = {}
        if verify:
            self._load_all()

    def _resolve(self, file: str, line: int) -> Path:
        """The image's path inside the folder; a path that leads out of it (``../x.png``, an
        absolute path elsewhere, a link pointing elsewhere) is refused: a shared folder of images is a
        boundary its captions file must not cross."""
        path = self.root / file
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise FolderError(f"{self.captions_file}, line {line}: {file!r} lies outside the folder {self.root}. "
                              "Copy the image into the folder and write its path relative to it "
                              "(e.g. 'images/cat.png').")
        return path

    def _check_token_lengths(self, context_length: int | None) -> None:
        from ..profiles import get_profile
        from ..text import count_tokens

        if context_length is None:
            context_length = get_profile().clip.context_length
        if not context_length:
            return
        counts = count_tokens(self.captions, int(context_length))
        long = [(line, caption, n) for line, caption, n in zip(self.lines, self.captions, counts)
                if n > context_length]
        if long:
            listed = "; ".join(f"line {line} ({n} tokens): {caption[:60]!r}"
                               for line, caption, n in long[:MAX_LISTED])
            more = f" and {len(long) - MAX_LISTED} more" if len(long) > MAX_LISTED else ""
            raise FolderError(
                f"{self.captions_file}: {len(long)} caption(s) have more tokens than the text encoder "
                f"reads ({context_length}, start and end markers included): {listed}{more}. "
                "Shorten them (a word is usually one token), or pass context_length= the "
                "context of the CLIP you train (0: no check).")

    def _check_files_exist(self, entries) -> None:
        missing = [(file, line) for (file, _, line), path in zip(entries, self.files)
                   if not path.is_file()]
        if missing:
            listed = ", ".join(f"{file!r} (line {line})" for file, line in missing[:MAX_LISTED])
            more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
            raise FolderError(f"{len(missing)} image file(s) listed in {self.captions_file} do not "
                              f"exist in {self.root}: {listed}{more}. Fix the paths (relative to "
                              "the folder) or delete those lines.")

    def _load_all(self) -> None:
        """Read every distinct image once; warn about tiny ones."""
        tiny = []
        for path in dict.fromkeys(self.files):              # distinct, in order
            self._cache[path] = load_image(path, self.image_size)
            with Image.open(path) as image:
                if min(image.size) < self.image_size / 4:
                    tiny.append(f"{path.name} ({image.size[0]}x{image.size[1]})")
        if tiny:
            listed = ", ".join(tiny[:MAX_LISTED]) + (" ..." if len(tiny) > MAX_LISTED else "")
            warnings.warn(f"{len(tiny)} image(s) are smaller than a quarter of image_size="
                          f"{self.image_size} and will look blurry: {listed}", stacklevel=3)

    def image(self, index: int) -> np.ndarray:
        """The converted image of item ``index``: uint8 (H, W, 3)."""
        path = self.files[index]
        if path not in self._cache:
            self._cache[path] = load_image(path, self.image_size)
        return self._cache[path]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        return to_float(self.image(index)), self.captions[index], {}

    def batch(self, indices):
        """A batch without a DataLoader: (images (B, 3, H, W), captions, {})."""
        indices = [int(i) for i in torch.as_tensor(indices).reshape(-1)]
        images = np.stack([self.image(i) for i in indices]) if indices else \
            np.zeros((0, self.image_size, self.image_size, 3), dtype=np.uint8)
        return to_float(images), [self.captions[i] for i in indices], {}

    def __repr__(self) -> str:
        return (f"ImageTextFolder(root={str(self.root)!r}, {len(self)} items, "
                f"captions_file={self.captions_file.name!r}, image_size={self.image_size})")

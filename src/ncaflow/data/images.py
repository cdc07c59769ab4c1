"""Reading image files and image/mask pairs, with one clear error per bad file.

Shared by Kvasir-SEG and by the user's own folders (`ncaflow.data.folder`). Every
problem is a `DataError` naming the file and what to do: an unreadable or truncated
image, a mask without its image (or the reverse), a mask of another size than its image.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ncaflow.data.sources import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "check_finite",
    "image_array",
    "image_channels",
    "image_files",
    "mask_array",
    "open_image",
    "read_pairs",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_GREY = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_WIDE = {"I", "I;16", "I;16B", "I;16L"}  # 16-bit grey: scaled by 65535, not 255


def image_files(
    folder: str | Path, *, key: str, recursive: bool = False, allow_empty: bool = False
) -> list[Path]:
    """The image files (``IMAGE_SUFFIXES``, no hidden files) in `folder`, sorted.

    Raises:
        DataError: `folder` (config key `key`) does not exist, or holds no image (unless
        `allow_empty`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{key}: {folder} {what}; point {key} at the folder of your images")
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(
        p
        for p in found
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    if not files and not allow_empty:
        kinds = ", ".join(f"*{s}" for s in IMAGE_SUFFIXES)
        raise DataError(f"{key}: no images ({kinds}) in {folder}; put your images there")
    return files


def open_image(path: Path, *, fix: str = "replace it or move it out of the folder") -> Image.Image:
    """`path` opened and fully decoded (a truncated file fails here, not later).

    Raises:
        DataError: naming `path`, why it cannot be read, and `fix`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                image = im.copy() if im.mode != "P" else im.convert("RGBA")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path} is not a readable image ({exc}); {fix}") from exc
    except Image.DecompressionBombWarning as exc:
        raise DataError(f"{path} is too large to read safely ({exc}); shrink it") from exc
    check_finite(image, path)
    return image


def check_finite(im: Image.Image, path: Path) -> None:
    """Refuse a float image (mode F, e.g. a float TIFF) with NaN or Inf pixels."""
    if im.mode == "F" and not np.isfinite(np.asarray(im)).all():
        raise DataError(
            f"{path}: NaN or Inf pixel values (a float image); save it with finite values"
        )


def image_channels(paths: Sequence[Path]) -> int:
    """1 if every image is grey (modes L, I;16, ...), else 3 (RGB; alpha is dropped).

    Reads the files' headers only."""
    for path in paths:
        try:
            with Image.open(path) as im:
                if im.mode not in _GREY:
                    return 3
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(
                f"{path} is not a readable image ({exc}); replace it or move it out of the folder"
            ) from exc
    return 1


def image_array(im: Image.Image, *, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image, resized (bilinear, aspect ratio not kept) to ``size = (H, W)``.

    Returns:
        float32 ``(channels, H, W)`` in [0, 1]; channels 1 (grey), 3 (RGB) or 4 (RGBA).
    """
    h, w = size
    if im.mode in _WIDE or im.mode == "F":  # 16-bit or float grey: scale by hand
        grey = im.convert("F").resize((w, h), Image.Resampling.BILINEAR)
        scale = 65535.0 if im.mode in _WIDE else 1.0
        arr = np.clip(np.asarray(grey, dtype=np.float32) / scale, 0.0, 1.0)[None]  # (1, H, W)
        if channels == 1:
            return arr
        colour = np.repeat(arr, 3, axis=0)  # grey as RGB, then an opaque alpha for 4
        return colour if channels == 3 else np.concatenate([colour, np.ones_like(arr)])
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    resized = im.convert(mode).resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(resized, dtype=np.float32) / 255.0  # (H, W) or (H, W, C)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def mask_array(im: Image.Image, *, size: tuple[int, int], zero_one: bool = True) -> np.ndarray:
    """A binary mask, resized to ``size = (H, W)``.

    The mask is read as grey; a colour mask must be grey (its channels within 96 of each
    other in every pixel: JPEG noise passes, a red (255, 0, 0) mask is refused, since
    whether red means foreground is a guess). With `zero_one` (lossless files) a mask
    whose largest value is 1 is a 0/1 mask, scaled to 0/255 first. It is resized with
    bilinear filtering and thresholded: > 127 is foreground (which also removes JPEG ringing).

    Returns:
        float32 ``(1, H, W)`` in {0, 1}.
    """
    h, w = size
    if im.mode not in _GREY:  # colour: each pixel must be grey-ish, else it is ambiguous
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
        spread = rgb.max(axis=2) - rgb.min(axis=2)
        if int(spread.max()) > 96:
            y, x = np.unravel_index(int(spread.argmax()), spread.shape)
            raise DataError(
                f"mask pixel ({x}, {y}) is coloured {tuple(int(v) for v in rgb[y, x])}; masks "
                "are read as grey (foreground > 127): save the mask black and white"
            )
    grey = im.convert("L")
    if zero_one and int(np.asarray(grey).max()) == 1:  # a 0/1 label image
        grey = Image.fromarray(np.asarray(grey) * np.uint8(255))
    resized = grey.resize((w, h), Image.Resampling.BILINEAR)
    return (np.asarray(resized) > 127).astype(np.float32)[None]


def read_pairs(
    images: str | Path,
    masks: str | Path,
    *,
    size: tuple[int, int],
    channels: int | None,
    keys: tuple[str, str] = ("data.images", "data.masks"),
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Image/mask pairs matched by file stem (``a.jpg`` with ``a.png`` is a pair).

    Every image needs a mask and every mask an image, of the same width and height.
    `channels` None: 1 if all images are grey, else 3.

    Returns:
        images: float32 ``(N, C, H, W)`` in [0, 1]; masks: float32 ``(N, 1, H, W)``
        in {0, 1}; ids: the sorted file stems.
    """
    image_list = image_files(images, key=keys[0])
    mask_list = image_files(masks, key=keys[1], allow_empty=True)  # then: "a.jpg has no mask"
    by_stem: dict[str, Path] = {}
    for group, key in ((image_list, keys[0]), (mask_list, keys[1])):
        seen: dict[str, Path] = {}
        for p in group:
            if p.stem in seen:
                raise DataError(
                    f"{key}: {seen[p.stem].name} and {p.name} in {p.parent} share the stem "
                    f"{p.stem!r}, which pairs images with masks; rename or remove one"
                )
            seen[p.stem] = p
        if group is mask_list:
            by_stem = seen
    stems = {p.stem for p in image_list}
    for m in mask_list:
        if m.stem not in stems:
            raise DataError(
                f"mask {m} has no image {m.stem}.* in {images} ({keys[0]}); add the image "
                "or remove the mask"
            )
    for p in image_list:
        if p.stem not in by_stem:
            raise DataError(
                f"image {p} has no mask {p.stem}.* in {masks} ({keys[1]}); add the mask "
                "or remove the image"
            )
    c = channels or image_channels(image_list)
    xs, ys = [], []
    for p in image_list:  # one at a time: full-size photos do not all fit in memory
        im = open_image(p)
        mask_file = by_stem[p.stem]
        mask = open_image(mask_file)
        if mask.size != im.size:
            raise DataError(
                f"mask {mask_file} is {mask.size[0]}x{mask.size[1]} but its image {p} is "
                f"{im.size[0]}x{im.size[1]} (width x height); a mask must have its image's "
                "size: re-export it, or remove the pair"
            )
        xs.append(image_array(im, channels=c, size=size))  # (C, H, W)
        lossy = mask_file.suffix.lower() in (".jpg", ".jpeg")  # ringing may reach 1
        try:
            ys.append(mask_array(mask, size=size, zero_one=not lossy))  # (1, H, W)
        except DataError as err:
            raise DataError(f"{mask_file} ({keys[1]}): {err}") from None
    return np.stack(xs), np.stack(ys), [p.stem for p in image_list]

"""Growing-NCA targets: an RGBA emoji (or any PNG) as a premultiplied, padded tensor."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ncaflow.data.images import open_image
from ncaflow.data.sources import DataError, Source, emoji_source, fetch

__all__ = ["load_emoji"]

_CODE = re.compile(r"^(?:emoji_)?u?([0-9a-f]{2,6}(?:_[0-9a-f]{2,6})*)$", re.IGNORECASE)


def _resolve(target: str, *, root: str | Path, mirror: str | Path | None) -> Path:
    """A local PNG path for `target` (local file, http(s) URL, or Noto emoji code)."""
    if target.startswith(("http://", "https://")):
        filename = Path(urllib.parse.urlparse(target).path).name or "emoji.png"
        source = Source(
            name=filename,
            urls=(target,),
            md5="",
            filename=filename,
            mirror_path=f"emoji/{filename}",
        )
        return fetch(source, root=root, mirror=mirror)
    if Path(target).expanduser().is_file():
        return Path(target).expanduser()
    match = _CODE.match(target)
    if match is None:
        raise DataError(
            f"emoji target {target!r} is not an existing file, an http(s) URL, or a Noto "
            "emoji code like '1f98e', 'u1f98e' or 'emoji_u1f98e'"
        )
    return fetch(emoji_source(match.group(1)), root=root, mirror=mirror)


def load_emoji(
    target: str,
    *,
    size: int = 40,
    pad: int = 16,
    root: str | Path,
    mirror: str | Path | None = None,
) -> torch.Tensor:
    """Load an RGBA target image the way the Distill Growing-NCA article does.

    The image is resized (PIL LANCZOS, which antialiases) so its longer side is `size`,
    centred on a transparent `size` x `size` canvas if it is not square, and zero-padded
    by `pad` on every side. RGB is premultiplied by alpha.

    Returns:
        float32 ``(4, size + 2*pad, size + 2*pad)`` in [0, 1], channels RGBA.
    """
    if size < 1 or pad < 0:
        raise DataError(f"emoji size must be >= 1 and pad >= 0, got size={size}, pad={pad}")
    path = _resolve(target, root=root, mirror=mirror)
    img = open_image(path, fix="replace it with a PNG").convert(
        "RGBA"
    )  # a broken file: DataError naming it
    scale = size / max(img.size)
    w, h = (max(1, round(d * scale)) for d in img.size)
    img = img.resize((w, h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(img, ((size - w) // 2, (size - h) // 2))

    rgba = np.asarray(canvas, dtype=np.float32) / 255.0  # (size, size, 4)
    rgba[..., :3] *= rgba[..., 3:]  # premultiply alpha
    rgba = np.pad(rgba, ((pad, pad), (pad, pad), (0, 0)))  # (S, S, 4), S = size + 2*pad
    return torch.from_numpy(np.ascontiguousarray(rgba.transpose(2, 0, 1)))  # (4, S, S)

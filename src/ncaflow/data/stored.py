"""A saved model's ``data:`` section, made safe to run here: it chooses no path, URL or folder.

Model folders travel between labs, and their JSON is data anyone can edit and re-digest.
Where data is read, downloaded and cached therefore comes only from the user: the
command line (``--set data.root=DIR``), ``$NCAFLOW_DATA_MIRROR`` and the project's
config. A stored dataset is named by the library's own source table (a MedMNIST flag,
an emoji code: each with its checksum), never by a stored path or URL.

- ``data.root`` and ``data.mirror`` (where the cache is written and copied from) are
  dropped: the cache is ``data/raw`` under the working folder and the mirror is the
  environment's, unless the user sets them; what was dropped is said in one line.
- the keys that name files to read (``data.target``, ``data.folds``, own-data folders)
  are kept only as plain relative paths below the working folder (how the workflow
  stores them); an absolute path, ``..``, ``~`` or a URL is refused unless the user sets
  the key, since using it would let the model file choose what is read.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from ncaflow.config import RunConfig
from ncaflow.data.sources import MIRROR_ENV, DataError

__all__ = ["DEFAULT_ROOT", "LOCATION_KEYS", "READ_KEYS", "from_user", "user_data", "warn_dropped"]

DEFAULT_ROOT = "data/raw"
LOCATION_KEYS: dict[str, str | None] = {"root": DEFAULT_ROOT, "mirror": None}
READ_KEYS = (
    "target",
    "folds",
    "images",
    "labels",
    "masks",
    "test_images",
    "test_labels",
    "test_masks",
)
_EMOJI_CODE = re.compile(r"[0-9a-fA-F]{4,6}(-[0-9a-fA-F]{4,6})*")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _shown(value: object, limit: int = 60) -> str:
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} chars)"


def _below_here(value: str) -> bool:
    """A plain relative path that stays below the working folder."""
    if not value or value.startswith("~") or _SCHEME.match(value) or "\\" in value:
        return False
    path = PurePosixPath(value)
    return not path.is_absolute() and ".." not in path.parts


def from_user(data: dict[str, Any], given: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """(``data`` without what a model file may not choose, what was dropped).

    ``given``: the dotted keys the user set (``data.root``, ...), which are kept as they
    come. Raises DataError for a stored path or URL of a file to read that the user did
    not set.
    """
    chosen = set(given)
    data = dict(data)
    dropped = []
    for key, default in LOCATION_KEYS.items():
        if f"data.{key}" in chosen or key not in data:
            continue
        value = data.pop(key)
        if value not in (default, None, ""):
            dropped.append(f"data.{key}={_shown(value, 200)}")
    for key in READ_KEYS:
        value = data.get(key)
        if f"data.{key}" in chosen or not isinstance(value, str):
            continue
        if key == "target" and _EMOJI_CODE.fullmatch(value):
            continue  # a code of the library's emoji table (fixed host, known checksums)
        if not _below_here(value):
            raise DataError(
                f"data.{key}: this model file names {_shown(value, 200)}, a path or URL outside "
                "the working folder, and a model file does not choose what ncaflow reads; "
                f"pass --set data.{key}=PATH to use your own copy"
            )
    return data, dropped


def warn_dropped(dropped: list[str]) -> None:
    """One warning line naming what :func:`from_user` dropped (nothing if nothing)."""
    if dropped:
        warnings.warn(
            f"ignored {', '.join(dropped)} stored in this model file (a model file does not "
            f"choose where data is cached or read); caching in {DEFAULT_ROOT} with the mirror "
            f"of ${MIRROR_ENV}; pass --set data.root=DIR or --set data.mirror=DIR to choose",
            UserWarning,
            stacklevel=3,
        )


def user_data(config: RunConfig, given: Iterable[str] = ()) -> RunConfig:
    """A saved model's run config with :func:`from_user` applied to its data section,
    and the one warning line."""
    data, dropped = from_user(config.data, given)
    warn_dropped(dropped)
    return dataclasses.replace(config, data=data)

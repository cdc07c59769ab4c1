"""ncaflow.data: dataset sources (URL, checksum, mirror, cache), loaders and fold splits.

This package is the only part of ncaflow that touches the network or dataset files.
"""

from ncaflow.data.emoji import load_emoji
from ncaflow.data.folds import array_checksum, fold_indices, make_folds, read_folds, write_folds
from ncaflow.data.kvasir import load_kvasir
from ncaflow.data.medmnist import load_medmnist, medmnist_info
from ncaflow.data.mnist import load_digits, load_mnist, read_idx
from ncaflow.data.sources import (
    MIRROR_ENV,
    SOURCES,
    DataError,
    DataWarning,
    Source,
    emoji_source,
    fetch,
    md5sum,
    medmnist_source,
    mirror_dir,
)

__all__ = [
    "MIRROR_ENV",
    "SOURCES",
    "DataError",
    "DataWarning",
    "Source",
    "array_checksum",
    "emoji_source",
    "fetch",
    "fold_indices",
    "load_digits",
    "load_emoji",
    "load_kvasir",
    "load_medmnist",
    "load_mnist",
    "make_folds",
    "md5sum",
    "medmnist_info",
    "medmnist_source",
    "mirror_dir",
    "read_folds",
    "read_idx",
    "write_folds",
]

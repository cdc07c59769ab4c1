"""Where every dataset file comes from: URL, checksum, local mirror, cache.

This module is the only place in ncaflow that opens a network connection.
`fetch` resolves one `Source` to a file in a cache folder, in this order:

1. a local mirror folder (argument, else ``$NCAFLOW_DATA_MIRROR``; the config
   key ``data.mirror``), copied into the cache atomically.  A mirror file whose
   md5 differs from the official one is used with a `DataWarning` that records
   its actual md5 (accepted checksums go to a ``<file>.md5`` sidecar, so the
   next run neither re-copies nor re-warns);
2. the cache itself, if the file's md5 is the official one or the one
   recorded in the sidecar;
3. a download (urllib, retries with backoff) into a temporary file that is
   checked and then renamed into place.

No failure leaves a partial file behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ncaflow.runtime.safe_io import atomic_write, publish

__all__ = [
    "MIRROR_ENV",
    "SOURCES",
    "DataError",
    "DataWarning",
    "Source",
    "emoji_source",
    "fetch",
    "md5sum",
    "medmnist_source",
    "mirror_dir",
    "refetch_hint",
]

MIRROR_ENV = "NCAFLOW_DATA_MIRROR"
_CHUNK = 1 << 20
_USER_AGENT = "ncaflow-data/0.1 (+urllib)"


class DataError(RuntimeError):
    """A data problem the user can fix (missing file, bad checksum, bad option)."""


class DataWarning(UserWarning):
    """Data was used although it could not be verified against an official checksum."""


@dataclass(frozen=True, kw_only=True)
class Source:
    """One downloadable file.

    Attributes:
        name: short human-readable name, e.g. ``"mnist-test-images"``.
        urls: download URLs, tried in order.
        md5: official md5 hex digest; ``""`` means unknown (accepted with a warning).
        filename: file name inside the cache folder.
        mirror_path: path relative to a mirror folder, e.g. ``"mnist/t10k-images-idx3-ubyte.gz"``.
    """

    name: str
    urls: tuple[str, ...]
    md5: str
    filename: str
    mirror_path: str


def md5sum(path: str | Path) -> str:
    """Return the md5 hex digest of the file at `path`."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def mirror_dir(mirror: str | Path | None = None) -> Path | None:
    """The mirror folder: `mirror` if given, else ``$NCAFLOW_DATA_MIRROR``, else None."""
    if mirror is not None and str(mirror) != "":
        return Path(mirror).expanduser()
    env = os.environ.get(MIRROR_ENV, "")
    return Path(env).expanduser() if env else None


def fetch(
    source: Source,
    *,
    root: str | Path,
    mirror: str | Path | None = None,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Return the path of `source` inside `root`, copying or downloading it if needed.

    Raises:
        DataError: offline with no mirror copy, or every download had a wrong checksum.
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    target = Path(root) / source.filename
    sidecar = target.with_name(target.name + ".md5")

    mdir = mirror_dir(mirror)
    if mdir is not None and (mdir / source.mirror_path).is_file():
        return _from_mirror(source, mdir / source.mirror_path, target, sidecar)

    if target.is_file():
        actual = md5sum(target)
        if actual in {source.md5, _read_sidecar(sidecar)} - {""}:
            return target

    actual = _download(source, target, mdir=mdir, retries=retries, timeout=timeout)
    _write_sidecar(sidecar, actual)
    if not source.md5:
        _warn_unverified(source, target, actual, origin=f"downloaded to {target}", stacklevel=3)
    return target


def refetch_hint(source: Source, path: Path, mirror: str | Path | None = None) -> str:
    """What to do about a fetched file that turned out unreadable (for an error message).

    A copy of a mirror file is fetched again from the same mirror, so the fix is to
    replace the mirror file; a cached download is deleted and downloaded again.
    """
    mdir = mirror_dir(mirror)
    official = f"the official file from {source.urls[0]}" if source.urls else "a good copy"
    if source.md5:
        official += f" (md5 {source.md5})"
    if mdir is not None and (mdir / source.mirror_path).is_file():
        mfile = mdir / source.mirror_path
        return (
            f"it is a copy of the mirror file {mfile} (md5 {md5sum(mfile)}): "
            f"replace that with {official}"
        )
    return f"delete {path} so that ncaflow fetches {official} again"


def _from_mirror(source: Source, mfile: Path, target: Path, sidecar: Path) -> Path:
    actual = md5sum(mfile)
    if target.is_file() and _read_sidecar(sidecar) == actual and md5sum(target) == actual:
        return target  # copied (and warned about) before
    _atomic_copy(mfile, target)
    _write_sidecar(sidecar, actual)
    if actual != source.md5:
        _warn_unverified(source, target, actual, origin=f"mirror file {mfile}", stacklevel=4)
    return target


def _warn_unverified(
    source: Source, target: Path, actual: str, *, origin: str, stacklevel: int
) -> None:
    """Warn that `target` is used with md5 `actual`, pointing at fetch's caller."""
    if source.md5:
        url = f" of {source.urls[0]}" if source.urls else ""
        why = f"has md5 {actual}, not the official {source.md5}{url}"
    else:
        why = f"has md5 {actual} (no official checksum is known)"
    warnings.warn(
        f"{source.name}: {origin} {why}; using it anyway and recording md5 {actual} "
        f"in {target}.md5",
        DataWarning,
        stacklevel=stacklevel,
    )


def _read_sidecar(sidecar: Path) -> str:
    try:
        return sidecar.read_text().split()[0]
    except (OSError, IndexError):
        return ""


def _write_sidecar(sidecar: Path, md5: str) -> None:
    name = sidecar.name.removesuffix(".md5")
    atomic_write(sidecar, lambda tmp: tmp.write_bytes(f"{md5}  {name}\n".encode()))


def _tempfile_beside(target: Path) -> tuple[BinaryIO, Path]:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    return os.fdopen(fd, "wb"), Path(tmp)


def _atomic_copy(src: Path, target: Path) -> None:
    with open(src, "rb") as f:  # opened first: an unreadable source names itself, not target
        atomic_write(target, lambda tmp: _copy_into(f, tmp))


def _copy_into(src: BinaryIO, tmp: Path) -> None:
    with open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)


class _ChecksumMismatch(Exception):
    def __init__(self, actual: str) -> None:
        super().__init__(actual)
        self.actual = actual


def _download_once(url: str, target: Path, *, md5: str, timeout: float) -> str:
    """Stream `url` into a temp file beside `target`, check `md5`, rename; return the md5."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.md5()
    out, tmp = _tempfile_beside(target)
    try:
        with out, urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if md5 and actual != md5:
            raise _ChecksumMismatch(actual)
        publish(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return actual


def _download(
    source: Source, target: Path, *, mdir: Path | None, retries: int, timeout: float
) -> str:
    errors: list[str] = []
    mismatches: list[str] = []
    dead: set[str] = set()  # URLs not worth retrying: 4xx or wrong checksum
    for attempt in range(max(1, retries)):
        if attempt:
            time.sleep(min(2.0**attempt, 30.0))  # backoff: 2 s, 4 s, ... at most 30 s
        for url in source.urls:
            if url in dead:
                continue
            try:
                return _download_once(url, target, md5=source.md5, timeout=timeout)
            except _ChecksumMismatch as exc:
                mismatches.append(f"{url} gave md5 {exc.actual}, expected {source.md5}")
                dead.add(url)
            except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
                errors.append(f"{url}: {exc}")
                if isinstance(exc, urllib.error.HTTPError) and 400 <= exc.code < 500:
                    dead.add(url)
        if dead >= set(source.urls):
            break
    if mismatches:
        raise DataError(
            f"{source.name}: every download of {source.filename} had the wrong checksum "
            f"({'; '.join(mismatches)}); nothing was kept. {_where_to_put(source, target, mdir)}"
        )
    last = errors[-1] if errors else "no URL known"
    raise DataError(
        f"{source.name}: cannot download {source.filename} from {', '.join(source.urls)} "
        f"(last error: {last}). {_where_to_put(source, target, mdir)}"
    )


def _where_to_put(source: Source, target: Path, mdir: Path | None) -> str:
    if mdir is None:
        mirror_hint = (
            f"or put it at <mirror>/{source.mirror_path} and point ncaflow at <mirror> "
            f"with the environment variable {MIRROR_ENV} or the config key data.mirror"
        )
    elif not mdir.is_dir():
        mirror_hint = f"or at {mdir / source.mirror_path} (the mirror folder {mdir} does not exist)"
    else:
        mirror_hint = f"or at {mdir / source.mirror_path} (the mirror {mdir} has no such file)"
    checksum = f" (md5 {source.md5})" if source.md5 else ""
    return f"Download it by hand{checksum} and put it at {target}, {mirror_hint}."


# ---------------------------------------------------------------------------------------
# The registry.

_MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_MNIST_MD5 = {  # the checksums torchvision uses
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

_NOTO_URL = "https://github.com/googlefonts/noto-emoji/raw/main/png/128/emoji_u{code}.png"
_NOTO_MD5 = {  # md5s of the official 128px Noto PNGs (the files in the shared data mirror)
    "1f98e": "95a8e9e1ab6155d4a3025a1700043139",  # lizard
    "1f98b": "50ae1d80adb898fc89f2e47e27736b06",  # butterfly
    "1f344": "5dd5209b2f8931bb5b18c96ba8c37bfc",  # mushroom
    "1f41e": "448f8a48fb8280c7c6b875596a73dcf9",  # lady beetle
}

MEDMNIST_SIZES = (28, 64, 128, 224)


def emoji_source(code: str) -> Source:
    """The 128px Noto emoji PNG for a code such as ``"1f98e"`` (lizard).

    Codes outside the four known ones get ``md5=""``: fetched, but with a `DataWarning`.
    """
    code = code.lower()
    filename = f"emoji_u{code}.png"
    return Source(
        name=f"emoji-{code}",
        urls=(_NOTO_URL.format(code=code),),
        md5=_NOTO_MD5.get(code, ""),
        filename=filename,
        mirror_path=f"emoji/{filename}",
    )


def _medmnist_info() -> dict[str, Any]:
    try:
        from medmnist.info import INFO
    except ImportError as exc:
        raise DataError(
            "the medmnist package is not installed; install it with "
            "`pip install --no-deps medmnist==3.0.2` (see README)"
        ) from exc
    return dict(INFO)


def medmnist_source(flag: str, size: int = 28) -> Source:
    """The MedMNIST v2 npz for `flag` (e.g. ``"breastmnist"``) at `size` (28, 64, 128, 224)."""
    info = _medmnist_info()
    if flag not in info:
        raise DataError(f"unknown MedMNIST flag {flag!r}; valid flags: {', '.join(sorted(info))}")
    suffix = "" if size == 28 else f"_{size}"
    if size not in MEDMNIST_SIZES or f"url{suffix}" not in info[flag]:
        valid = [s for s in MEDMNIST_SIZES if f"url{'' if s == 28 else f'_{s}'}" in info[flag]]
        raise DataError(f"MedMNIST {flag} has no size {size!r}; valid sizes: {valid}")
    filename = f"{flag}{suffix}.npz"
    return Source(
        name=f"medmnist-{flag}{suffix}",
        urls=(info[flag][f"url{suffix}"],),
        md5=info[flag][f"MD5{suffix}"],
        filename=filename,
        mirror_path=f"medmnist/{filename}",
    )


def _mnist(split: str, kind: str) -> Source:
    stem = "t10k" if split == "test" else "train"
    filename = f"{stem}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
    return Source(
        name=f"mnist-{split}-{kind}",
        urls=tuple(base + filename for base in _MNIST_URLS),
        md5=_MNIST_MD5[filename],
        filename=filename,
        mirror_path=f"mnist/{filename}",
    )


SOURCES: dict[str, Source] = {
    **{f"mnist-{s}-{k}": _mnist(s, k) for s in ("train", "test") for k in ("images", "labels")},
    **{f"emoji-{code}": emoji_source(code) for code in _NOTO_MD5},
    # The official md5 of kvasir-seg.zip is not published and could not be checked offline,
    # so it is "" (accepted with a DataWarning that records the md5 actually seen).
    "kvasir-seg": Source(
        name="kvasir-seg",
        urls=("https://datasets.simula.no/downloads/kvasir-seg.zip",),
        md5="",
        filename="kvasir-seg.zip",
        mirror_path="kvasir-seg.zip",
    ),
}

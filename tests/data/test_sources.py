from __future__ import annotations

import hashlib
import http.server
import io
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncaflow.data import sources
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

_REAL_URLOPEN = urllib.request.urlopen  # before the autouse fixture patches it


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _source(md5: str, name: str = "thing.bin") -> Source:
    return Source(
        name="thing",
        urls=("https://example.invalid/a/" + name, "http://example.invalid/b/" + name),
        md5=md5,
        filename=name,
        mirror_path="sub/" + name,
    )


def _fake_urlopen(monkeypatch: pytest.MonkeyPatch, payloads: list[bytes | Exception]) -> list[str]:
    """urlopen that returns/raises the given payloads in turn; returns the URLs asked for."""
    asked: list[str] = []

    def urlopen(request: urllib.request.Request, timeout: float) -> io.BytesIO:
        asked.append(request.full_url)
        item = payloads.pop(0)
        if isinstance(item, Exception):
            raise item
        return io.BytesIO(item)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(sources.time, "sleep", lambda s: None)
    return asked


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_md5sum(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert md5sum(tmp_path / "f") == _md5(b"abc")


def test_mirror_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert mirror_dir() is None
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "env"))
    assert mirror_dir() == tmp_path / "env"
    assert mirror_dir(tmp_path / "arg") == tmp_path / "arg"


def test_mirror_mismatch_warns_once_and_records_md5(tmp_path: Path) -> None:
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    (mirror / "sub").mkdir(parents=True)
    (mirror / "sub" / "thing.bin").write_bytes(b"mirror copy")
    src = _source(_md5(b"official"))

    official = f"not the official {_md5(b'official')} of https://example.invalid/a/thing.bin"
    with pytest.warns(DataWarning, match=f"{_md5(b'mirror copy')}, {official}"):
        path = fetch(src, root=cache, mirror=mirror)
    assert path == cache / "thing.bin" and path.read_bytes() == b"mirror copy"
    assert (cache / "thing.bin.md5").read_text().split()[0] == _md5(b"mirror copy")
    mtime = path.stat().st_mtime_ns

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fetch(src, root=cache, mirror=mirror) == path
    assert path.stat().st_mtime_ns == mtime  # not copied again
    assert _files(cache) == ["thing.bin", "thing.bin.md5"]


def test_mirror_from_env_and_matching_md5_is_silent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "sub" / "thing.bin").write_bytes(b"official")
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "m"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = fetch(_source(_md5(b"official")), root=tmp_path / "c")
    assert path.read_bytes() == b"official"


def test_mirror_takes_precedence_over_cache(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "thing.bin").write_bytes(b"official")
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "sub" / "thing.bin").write_bytes(b"mirror copy")
    with pytest.warns(DataWarning):
        path = fetch(_source(_md5(b"official")), root=tmp_path / "c", mirror=tmp_path / "m")
    assert path.read_bytes() == b"mirror copy"


def test_cache_hit_needs_no_network(tmp_path: Path) -> None:
    tmp_path.joinpath("thing.bin").write_bytes(b"official")
    assert fetch(_source(_md5(b"official")), root=tmp_path) == tmp_path / "thing.bin"


def test_corrupt_cache_is_downloaded_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tmp_path.joinpath("thing.bin").write_bytes(b"half")
    _fake_urlopen(monkeypatch, [b"official"])
    path = fetch(_source(_md5(b"official")), root=tmp_path)
    assert path.read_bytes() == b"official"
    assert _files(tmp_path) == ["thing.bin", "thing.bin.md5"]


def test_retries_and_second_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked = _fake_urlopen(
        monkeypatch,
        [urllib.error.URLError("down"), TimeoutError("slow"), b"official"],
    )
    path = fetch(_source(_md5(b"official")), root=tmp_path, retries=2)
    assert path.read_bytes() == b"official"
    assert [u.split("/")[2] for u in asked] == ["example.invalid"] * 3
    assert "/a/" in asked[0] and "/b/" in asked[1] and "/a/" in asked[2]


def test_unverified_download_warns_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_urlopen(monkeypatch, [b"anything"])
    with pytest.warns(DataWarning, match="no official checksum"):
        fetch(_source(""), root=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fetch(_source(""), root=tmp_path).read_bytes() == b"anything"


def test_offline_without_mirror_says_where_to_put_the_file(tmp_path: Path) -> None:
    src = SOURCES["mnist-test-images"]
    with pytest.raises(DataError) as info:
        fetch(src, root=tmp_path / "cache", retries=1)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in msg
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz" in msg
    assert str(tmp_path / "cache" / "t10k-images-idx3-ubyte.gz") in msg
    assert "<mirror>/mnist/t10k-images-idx3-ubyte.gz" in msg
    assert MIRROR_ENV in msg and "data.mirror" in msg
    assert _files(tmp_path / "cache") == []


def test_offline_with_mirror_lacking_the_file(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(DataError, match="has no such file") as info:
        fetch(_source("0" * 32), root=tmp_path / "c", mirror=tmp_path / "m", retries=1)
    assert str(tmp_path / "m" / "sub" / "thing.bin") in str(info.value)


@pytest.fixture
def local_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that serves b'served bytes' for any path."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"served bytes"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", _REAL_URLOPEN)
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/thing.bin"
    server.shutdown()
    server.server_close()


def test_download_from_local_server(local_server: str, tmp_path: Path) -> None:
    src = Source(name="t", urls=(local_server,), md5=_md5(b"served bytes"), filename="t.bin",
                 mirror_path="t.bin")  # fmt: skip
    assert fetch(src, root=tmp_path, timeout=5).read_bytes() == b"served bytes"


def test_download_with_wrong_checksum_leaves_nothing(local_server: str, tmp_path: Path) -> None:
    src = Source(name="t", urls=(local_server,), md5=_md5(b"other"), filename="t.bin",
                 mirror_path="t.bin")  # fmt: skip
    with pytest.raises(DataError, match="wrong checksum") as info:
        fetch(src, root=tmp_path, timeout=5)
    assert _md5(b"served bytes") in str(info.value)
    assert _files(tmp_path) == []


def test_registry() -> None:
    assert SOURCES["mnist-train-images"].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert SOURCES["mnist-test-labels"].md5 == "ec29112dd5afa0611ce80d1b7f02629c"
    assert all(len(s.urls) == 2 for k, s in SOURCES.items() if k.startswith("mnist"))
    assert SOURCES["kvasir-seg"].urls == ("https://datasets.simula.no/downloads/kvasir-seg.zip",)
    lizard = emoji_source("1F98E")
    assert lizard.filename == "emoji_u1f98e.png" and lizard.mirror_path == "emoji/emoji_u1f98e.png"
    assert lizard.md5 == "95a8e9e1ab6155d4a3025a1700043139"
    assert emoji_source("1f600").md5 == ""
    s64 = medmnist_source("breastmnist", 64)
    assert (s64.filename, s64.mirror_path) == ("breastmnist_64.npz", "medmnist/breastmnist_64.npz")
    assert medmnist_source("breastmnist", 28).md5 == "750601b1f35ba3300ea97c75c52ff8f6"
    with pytest.raises(DataError, match="valid sizes"):
        medmnist_source("breastmnist", 32)
    with pytest.raises(DataError, match="valid flags"):
        medmnist_source("nosuchmnist", 28)


def test_emoji_md5s_are_the_shared_files(shared_mirror: Path) -> None:
    for code in ("1f98e", "1f98b", "1f344", "1f41e"):
        src = emoji_source(code)
        assert md5sum(shared_mirror / src.mirror_path) == src.md5


def test_cached_files_get_the_usual_mode_and_a_bad_source_names_itself(
    tmp_path: Path, umask_022: None
) -> None:
    """A mirror copy and its md5 sidecar are written through temp files (mkstemp makes those
    0600) and end 0644 under umask 022, like any new file; only they are left in the cache."""
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "sub" / "thing.bin").write_bytes(b"mirror copy")
    with pytest.warns(DataWarning):
        path = fetch(_source(_md5(b"official")), root=tmp_path / "c", mirror=tmp_path / "m")
    for written in (path, path.with_name("thing.bin.md5")):
        assert written.stat().st_mode & 0o777 == 0o644, written
    assert _files(tmp_path / "c") == ["thing.bin", "thing.bin.md5"]
    with pytest.raises(OSError) as err:  # a source that cannot be read: its own name
        sources._atomic_copy(tmp_path / "m" / "missing.bin", tmp_path / "c" / "other.bin")
    assert err.value.filename == str(tmp_path / "m" / "missing.bin")
    assert _files(tmp_path / "c") == ["thing.bin", "thing.bin.md5"]

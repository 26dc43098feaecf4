"""The store's layout: new stores keep each blob one directory level deep (``blobs/<aa>/<sha256>``),
stores made before that keep two (``blobs/<aa>/<bb>/<sha256>``) and work as they did."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import httpx
import pytest

from gitmirror.layout import LAYOUT_FILE, UnknownLayout
from gitmirror.store import BlobStore

from conftest import Mirror
from fakeupstream import build_wheel

DATA = b"release file bytes " * 300
DIGEST = hashlib.sha256(DATA).hexdigest()


def to_two_levels(store: Path) -> set[str]:
    """Lay a store out as gitmirror did before 2026-12-01: two levels, no ``LAYOUT``."""
    blobs = store / "blobs"
    moved = set()
    for path in list(blobs.glob("*/*")):
        target = blobs / path.name[:2] / path.name[2:4] / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        moved.add(path.name)
    (blobs / LAYOUT_FILE).unlink()
    return moved


def test_a_new_store_keeps_blobs_one_level_deep_and_says_so(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    assert store.depth == 1
    store.put_bytes(DATA)
    assert (tmp_path / "store/blobs" / DIGEST[:2] / DIGEST).read_bytes() == DATA
    assert (tmp_path / "store/blobs" / LAYOUT_FILE).read_text() == "<aa>/<sha256>\n"
    assert list(BlobStore(tmp_path / "store")) == [DIGEST]


def test_an_empty_blobs_directory_is_a_new_store(tmp_path: Path) -> None:
    (tmp_path / "store/blobs").mkdir(parents=True)  # an init interrupted before its LAYOUT
    assert BlobStore(tmp_path / "store").depth == 1


def test_a_store_made_before_keeps_two_levels(tmp_path: Path) -> None:
    old = tmp_path / "store/blobs" / DIGEST[:2] / DIGEST[2:4] / DIGEST
    old.parent.mkdir(parents=True)
    old.write_bytes(DATA)
    store = BlobStore(tmp_path / "store")
    assert store.depth == 2 and store.has(DIGEST) and store.verify(DIGEST, len(DATA)) is None
    other = store.put_bytes(b"a new release file")
    assert (tmp_path / "store/blobs" / other[:2] / other[2:4] / other).read_bytes() == b"a new release file"
    assert (tmp_path / "store/blobs" / LAYOUT_FILE).read_text() == "<aa>/<bb>/<sha256>\n"
    assert set(BlobStore(tmp_path / "store")) == {DIGEST, other}


def test_an_unknown_layout_is_refused_in_one_line(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    (mirror.store / "blobs" / LAYOUT_FILE).write_text("<aa>/<bb>/<cc>/<sha256>\n")  # from a later version
    with pytest.raises(UnknownLayout):
        BlobStore(mirror.store)
    for command in (("status",), ("sync",), ("verify",)):
        result = mirror.run(*command)
        assert result.returncode == 2, command
        assert result.stderr.strip().splitlines() == [
            "gitmirror: error: mirror/store/blobs/LAYOUT: unknown blob store layout '<aa>/<bb>/<cc>/<sha256>'"
        ]


def test_a_mirror_with_a_two_level_store_syncs_verifies_serves_and_hydrates(
    mirror: Mirror, sample, serve, tmp_path: Path
) -> None:
    mirror.run("sync", check=True)
    old_blobs = to_two_levels(mirror.store)
    assert old_blobs and not list((mirror.store / "blobs").glob("*/*.*"))

    warm = mirror.run("sync", check=True).stdout  # the warm check finds every blob where the layout says
    assert "unchanged since the last complete sync" in warm
    wheel = build_wheel("demo-pkg", "9.0")
    mirror.upstream.add("demo-pkg", wheel)
    assert ", 1 files added" in mirror.run("sync", "--full", check=True).stdout
    assert (mirror.store / "blobs" / wheel.sha256[:2] / wheel.sha256[2:4] / wheel.sha256).read_bytes() == wheel.data
    assert not mirror.blob(wheel.sha256).exists()
    status = json.loads(mirror.run("status", "--json", check=True).stdout)
    assert status["blobs_needed"] > len(old_blobs) and status["blobs_missing"] == status["blobs_damaged"] == []
    verified = mirror.run("verify", check=True).stdout
    assert f"{status['blobs_needed']} blobs re-hashed" in verified and verified.strip().endswith(": OK")

    server = serve()
    answer = httpx.get(f"{server.url}/files/demo-pkg/{wheel.filename}")
    assert answer.status_code == 200 and answer.content == wheel.data

    copy = tmp_path / "old-disk"  # a disk holding a store as earlier versions wrote it
    shutil.copytree(mirror.store, copy)
    clone = Mirror(root=tmp_path / "clone", upstream=mirror.upstream)
    clone.root.mkdir()
    clone.configure()
    shutil.copytree(mirror.repo, clone.repo)
    clone.run("hydrate", "--from", str(copy), check=True)
    assert clone.blob_names() == old_blobs | {wheel.sha256} and clone.blob(wheel.sha256).read_bytes() == wheel.data
    assert (clone.store / "blobs" / LAYOUT_FILE).read_text() == "<aa>/<sha256>\n"

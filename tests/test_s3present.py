"""The local record of a bucket's blobs (``gitmirror.storage.s3present``), in-process."""

from __future__ import annotations

from pathlib import Path

from gitmirror.storage.s3present import HEADER, PresentRecord

A, B, C = ("a" * 64, "b" * 64, "c" * 64)


def test_the_bucket_is_listed_once_and_processes_share_what_they_add(tmp_path: Path) -> None:
    listings = []

    def listing() -> list[str]:
        listings.append(1)
        return [A]

    path = tmp_path / "state" / "s3-blobs-x"
    sync, worker = PresentRecord(path, listing), PresentRecord(path, listing)
    assert sync.contains(A) and not sync.contains(B)
    assert worker.contains(A) and len(listings) == 1  # the second reader found the record
    worker.add(B)  # uploaded by a download process
    assert sync.contains(B)  # seen by the sync through the appended line
    assert path.read_bytes() == HEADER + f"{A}\n{B}\n".encode()


def test_a_takedown_rewrites_the_record_and_a_record_without_header_is_listed_again(tmp_path: Path) -> None:
    path = tmp_path / "s3-blobs-x"
    record = PresentRecord(path, lambda: [A, B])
    assert record.contains(A)
    record.discard(A)
    assert not record.contains(A) and not PresentRecord(path, lambda: []).contains(A)
    path.write_bytes(f"{C}\n".encode())  # damaged: no header
    fresh = PresentRecord(path, lambda: [B])
    assert fresh.contains(B) and not fresh.contains(C)
    assert path.read_bytes().startswith(HEADER)


def test_without_a_listing_a_record_is_used_only_when_there_is_one(tmp_path: Path) -> None:
    """A server's record (no listing): nothing is listed or written until a sync has made one."""
    path = tmp_path / "s3-blobs-x"
    server = PresentRecord(path, None)
    assert not server.contains(A) and not path.exists()
    server.add(A)  # found by asking the bucket: kept in memory
    assert server.contains(A) and not path.exists()
    server.discard(A)
    assert not server.contains(A) and not path.exists()
    PresentRecord(path, lambda: [B]).contains(B)  # a sync made the record
    assert PresentRecord(path, None).contains(B)

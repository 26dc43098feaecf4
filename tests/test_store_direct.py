"""Large blobs are written around the page cache (``O_DIRECT``), and any caller stays correct.

The store asks for direct writes only for blobs announced at 1 MiB or more; a write that is not
aligned (the end of a body, odd-sized chunks, an unaligned buffer) turns it off for the rest of the
file, and a file system that refuses the flag gets ordinary writes. In every case the stored bytes
are exactly the announced ones, checked by hash, and nothing half-written is ever published.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gitmirror.model.hosts import HostPolicy
from gitmirror.storage import store as store_module
from gitmirror.storage.store import DIRECT_ALIGN, DIRECT_MIN_BYTES, BlobStore, BlobWriter, IntegrityError
from gitmirror.upstream.transport import Transport

BIG = os.urandom(3 * DIRECT_MIN_BYTES + 123)  # three whole buffers and an unaligned tail


def direct_flag(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


@pytest.fixture
def direct_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(length, O_DIRECT on) of every write that reached the direct path."""
    seen: list[tuple[int, bool]] = []
    original = BlobWriter._write_direct

    def recording(self: BlobWriter, view: memoryview) -> memoryview:
        seen.append((len(view), direct_flag(self._fd)))
        return original(self, view)

    monkeypatch.setattr(BlobWriter, "_write_direct", recording)
    return seen


def write_through_aligned_buffer(writer: BlobWriter, data: bytes, size: int = DIRECT_MIN_BYTES) -> None:
    buffer = memoryview(mmap.mmap(-1, size))
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        buffer[: len(piece)] = piece
        writer.write(buffer[: len(piece)])


def test_whole_aligned_buffers_go_direct_and_the_tail_does_not(store: BlobStore, direct_writes) -> None:
    digest = hashlib.sha256(BIG).hexdigest()
    with store.writer(digest, len(BIG)) as writer:
        if not writer._direct:
            pytest.skip("this file system refuses O_DIRECT (the fallback is tested below)")
        write_through_aligned_buffer(writer, BIG)
        path = writer.commit()
    assert path.read_bytes() == BIG
    assert direct_writes[:3] == [(DIRECT_MIN_BYTES, True)] * 3  # the bulk bypassed the page cache
    assert direct_writes[3] == (123, True)  # the tail arrives on the direct path and leaves it
    assert not os.listdir(store.tmp_dir)


def test_small_blobs_are_written_normally(store: BlobStore, direct_writes) -> None:
    data = os.urandom(DIRECT_MIN_BYTES - 1)
    with store.writer(hashlib.sha256(data).hexdigest(), len(data)) as writer:
        write_through_aligned_buffer(writer, data)
        writer.commit()
    assert direct_writes == []
    assert store.path(hashlib.sha256(data).hexdigest()).read_bytes() == data


def test_unknown_size_is_written_normally(store: BlobStore, direct_writes) -> None:
    with store.writer(hashlib.sha256(BIG).hexdigest(), None) as writer:
        write_through_aligned_buffer(writer, BIG)
        writer.commit()
    assert direct_writes == []
    assert store.path(hashlib.sha256(BIG).hexdigest()).read_bytes() == BIG


@pytest.mark.parametrize("chunk", [1000, DIRECT_ALIGN + 1, 65536 + 7])
def test_odd_sized_chunks_turn_direct_writes_off_and_store_the_same_bytes(store: BlobStore, chunk: int) -> None:
    digest = hashlib.sha256(BIG).hexdigest()
    with store.writer(digest, len(BIG)) as writer:
        for start in range(0, len(BIG), chunk):
            writer.write(BIG[start : start + chunk])
        assert not direct_flag(writer._fd) and not writer._direct
        writer.commit()
    assert store.path(digest).read_bytes() == BIG


def test_an_unaligned_buffer_of_aligned_length_falls_back_without_losing_bytes(store: BlobStore) -> None:
    digest = hashlib.sha256(BIG).hexdigest()
    shifted = memoryview(bytearray(b"x" + BIG))[1:]  # one byte past an allocation: not page-aligned
    with store.writer(digest, len(BIG)) as writer:
        writer.write(shifted[: 2 * DIRECT_ALIGN])
        writer.write(shifted[2 * DIRECT_ALIGN :])
        assert not writer._direct
        writer.commit()
    assert store.path(digest).read_bytes() == BIG


def test_a_file_system_refusing_o_direct_gets_ordinary_writes(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    refused: list[str] = []

    def refusing_open(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            os.close(real_open(path, flags & ~os.O_DIRECT, mode))  # the kernel creates, then refuses
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(store_module.os, "open", refusing_open)
    for data in (BIG, BIG[::-1]):
        digest = hashlib.sha256(data).hexdigest()
        with store.writer(digest, len(data)) as writer:
            write_through_aligned_buffer(writer, data)
            writer.commit()
        assert store.path(digest).read_bytes() == data
    assert len(refused) == 1  # asked once; later blobs do not ask again
    assert not os.listdir(store.tmp_dir)  # the refused file was not left behind


def test_a_wrong_hash_written_directly_publishes_nothing(store: BlobStore) -> None:
    claimed = hashlib.sha256(b"other bytes").hexdigest()
    writer = store.writer(claimed, len(BIG))
    write_through_aligned_buffer(writer, BIG)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        writer.commit()
    assert not store.has(claimed)
    assert not os.listdir(store.tmp_dir)


def test_a_body_longer_than_announced_is_refused_on_the_direct_path(store: BlobStore) -> None:
    digest = hashlib.sha256(BIG).hexdigest()
    with store.writer(digest, len(BIG) - DIRECT_MIN_BYTES) as writer, pytest.raises(IntegrityError, match="longer"):
        write_through_aligned_buffer(writer, BIG)
    assert not store.has(digest)
    assert not os.listdir(store.tmp_dir)


class _BigFile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the handler's API)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BIG)))
        self.end_headers()
        for start in range(0, len(BIG), 7777):  # odd pieces on the wire: the fetcher re-assembles buffers
            self.wfile.write(BIG[start : start + 7777])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def big_file_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BigFile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/big.whl"
    finally:
        server.shutdown()
        server.server_close()


def test_a_download_reaches_the_store_in_whole_aligned_buffers(store: BlobStore, direct_writes, big_file_url) -> None:
    digest = hashlib.sha256(BIG).hexdigest()
    fetcher = Transport(HostPolicy(big_file_url), 10.0)
    try:
        with store.writer(digest, len(BIG)) as writer:
            if not writer._direct:
                pytest.skip("this file system refuses O_DIRECT")
            fetcher.fetch(big_file_url, writer)
            writer.commit()
    finally:
        fetcher.close()
    assert store.path(digest).read_bytes() == BIG
    assert direct_writes == [(DIRECT_MIN_BYTES, True)] * 3 + [(123, True)]

"""The blob store in an S3-compatible bucket: ``<prefix>/blobs/<aa>/<bb>/<sha256>``, the directory layout.

The same promise as the directory store. A blob's bytes are hashed as they arrive and kept on this
machine (in memory, or an unnamed file in ``<root>/tmp/`` past ``SPOOL_IN_MEMORY``) until they are
checked; only checked bytes are sent, in one PUT or one multipart upload, and S3 makes an object
visible only when its upload completes. So a reader never sees a partial or unverified blob under a
digest name, and a process killed mid-upload leaves nothing under it (a multipart upload it began
stays invisible; a bucket lifecycle rule for incomplete uploads removes its parts, docs/s3.md).
The upload carries its sha256 (``x-amz-checksum-sha256``): the server refuses bytes changed on the way.

How the bucket is reached is ``s3client``'s. Which blobs the bucket holds is answered from a
local record (``s3present``) rather than a request per blob.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..model.layout import BLOBS_DIR
from ..model.names import check_sha256
from .blobs import problem_of, store_bytes
from .s3client import S3Error, S3Settings, client_for, create_bucket, endpoint_url, parse_url
from .s3present import PresentRecord
from .store import MISSING, AnnouncedBody

if TYPE_CHECKING:
    from obstore.store import S3Store as ObjectStore

#: the local state directory under ``root`` (as for a directory store: ``sync.unchanged.STATE_DIR``)
STATE_DIR = "state"
#: blobs up to this size are kept in memory until sent, larger ones in an unnamed local file
SPOOL_IN_MEMORY = 8 << 20
#: the part size of a multipart upload; a blob at most this big is sent in one PUT
PART_BYTES = 8 << 20
#: blobs of one process on their way at once
UPLOAD_THREADS = 4
#: bytes asked for per read while a blob is streamed or re-hashed
READ_BYTES = 1 << 20


class S3Store:
    """Blobs in a bucket; ``root`` is a local directory for temporary files and local state."""

    def __init__(self, settings: S3Settings, root: str | Path, trust_record: bool = False) -> None:
        self.settings = settings
        #: ``has`` answers from the record alone: for a sync, where a blob another machine stored
        #: since the record was made is downloaded and sent again (the same bytes, the same name)
        #: instead of costing a request for every new file
        self.trust_record = trust_record
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self._client: ObjectStore | None = None
        self._uploads: futures.ThreadPoolExecutor | None = None
        record = self.root / STATE_DIR / f"s3-blobs-{_record_key(settings)}"
        self.record = PresentRecord(record, self.__iter__ if trust_record else None)

    @classmethod
    def from_location(cls, location: str) -> S3Store:
        parts = urlsplit(location)
        options = dict(parse_qsl(parts.query))
        bucket, prefix = parse_url(parts._replace(query="").geturl())
        root = options.pop("root")
        seconds = int(options.pop("presign_seconds", "0"))
        return cls(S3Settings(bucket, prefix, presign_seconds=seconds, **options), root)

    @property
    def location(self) -> str:
        settings = asdict(self.settings)
        options = {key: value for key, value in settings.items() if value and key not in ("bucket", "prefix")}
        return f"{self.settings.url}?{urlencode({**options, 'root': str(self.root)})}"

    def uploads(self) -> futures.ThreadPoolExecutor:
        """The threads that send checked blobs, started on first use (in the process that uploads)."""
        if self._uploads is None:
            self._uploads = futures.ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="gitmirror-s3-upload")
        return self._uploads

    @property
    def client(self) -> ObjectStore:
        """The obstore client, made on first use (after a download process forked, never before)."""
        if self._client is None:
            self._client = client_for(self.settings)
        return self._client

    def key(self, sha256: str) -> str:
        """The blob's key below the prefix (the prefix is the client's)."""
        sha256 = check_sha256(sha256)
        return f"{BLOBS_DIR}/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def init(self) -> None:
        """The local directory, and the bucket when it is missing."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        create_bucket(self.settings)

    def clean_tmp(self) -> int:
        """Spooled blobs are unnamed files: a killed writer leaves none. Nothing to remove."""
        return 0

    def has(self, sha256: str) -> bool:
        """A blob this machine's record of the bucket lists (``s3present``) costs no request; any
        other is asked for (another machine may have stored it) and recorded when found."""
        if self.record.contains(sha256):
            return True
        if self.trust_record:
            return False
        try:
            self.size(sha256)
        except FileNotFoundError:
            return False
        self.record.add(sha256)
        return True

    def size(self, sha256: str) -> int:
        import obstore

        return int(_call(obstore.head, self.client, self.key(sha256))["size"])

    def writer(self, sha256: str, size: int | None = None) -> S3Writer:
        return S3Writer(self, sha256, size)

    def put_bytes(self, data: bytes, sha256: str | None = None) -> str:
        return store_bytes(self, data, sha256)

    def open(self, sha256: str) -> IO[bytes]:
        """A seekable reader that fetches ranges as they are read (a wheel's METADATA costs a few)."""
        import obstore

        reader = _call(obstore.open_reader, self.client, self.key(sha256), buffer_size=READ_BYTES)
        return io.BufferedReader(_RawReader(reader), READ_BYTES)

    def read_bytes(self, sha256: str) -> bytes:
        import obstore

        return bytes(_call(obstore.get, self.client, self.key(sha256)).bytes())

    def chunks(self, sha256: str) -> Iterator[bytes]:
        import obstore

        for chunk in _call(obstore.get, self.client, self.key(sha256)).stream(min_chunk_size=READ_BYTES):
            yield bytes(chunk)

    async def stream(self, sha256: str) -> AsyncIterator[bytes]:
        """The blob's bytes for a response; FileNotFoundError before the first chunk when absent."""
        import obstore

        result = await obstore.get_async(self.client, self.key(sha256))
        async for chunk in result.stream(min_chunk_size=READ_BYTES):
            yield bytes(chunk)

    def presigned_url(self, sha256: str) -> str:
        """A URL that fetches the blob without credentials for ``presign_seconds``."""
        import obstore

        return obstore.sign(self.client, "GET", self.key(sha256), timedelta(seconds=self.settings.presign_seconds))

    def copy_to(self, sha256: str, key: str) -> bool:
        """A server-side copy of the blob under ``key`` (below the prefix, e.g. ``files/<project>/<name>``),
        unless an object of its size is there; returns whether it copied. For static renders."""
        import obstore

        try:
            if int(_call(obstore.head, self.client, key)["size"]) == self.size(sha256):
                return False
        except FileNotFoundError:
            pass
        _call(obstore.copy, self.client, self.key(sha256), key)
        return True

    def verify(self, sha256: str, size: int | None = None) -> str | None:
        try:
            return problem_of(self.chunks(sha256), sha256, size)
        except FileNotFoundError:
            return MISSING

    def remove(self, sha256: str) -> bool:
        """Delete a blob (takedown only); returns whether it existed."""
        import obstore

        try:
            self.size(sha256)
        except FileNotFoundError:
            self.record.discard(sha256)
            return False
        _call(obstore.delete, self.client, self.key(sha256))
        self.record.discard(sha256)
        return True

    def __iter__(self) -> Iterator[str]:
        import obstore

        for batch in _call(obstore.list, self.client, prefix=f"{BLOBS_DIR}/", chunk_size=1000):
            for meta in batch:
                name = meta["path"].rsplit("/", 1)[-1]
                if len(name) == 64:
                    yield name

    def local_file(self, sha256: str) -> str | None:
        return None

    def sync_handle(self) -> int | None:
        return None  # each upload is complete when it returns

    def sync_all(self, handle: int) -> None:
        raise AssertionError("an S3 store has no sync handle")


class S3Writer(AnnouncedBody):
    """One blob on its way to the bucket: hashed and spooled locally, sent only once checked."""

    def __init__(self, store: S3Store, expected_sha256: str, expected_size: int | None) -> None:
        super().__init__(expected_sha256, expected_size)
        self.store = store
        store.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, dir=str(store.tmp_dir))  # noqa: SIM115
        self._upload: futures.Future[str] | None = None
        sys.audit("gitmirror.crashpoint", "store.tmp-created")

    def write(self, chunk: bytes | memoryview) -> None:
        self.received(chunk)
        self._spool.write(chunk)
        sys.audit("gitmirror.crashpoint", "store.chunk-written")

    def check(self) -> None:
        """Raise IntegrityError, keeping nothing, unless the bytes are the announced ones; checked
        bytes start on their way to the bucket at once (``publish`` waits for them), so a download
        process fetches its next file while this one is sent."""
        try:
            self.check_announced()
        except BaseException:
            self.abort()
            raise
        self._upload = self.store.uploads().submit(self._send)

    def commit(self) -> str:
        self.check()
        return self.publish()

    def publish(self, durable: bool = False) -> str:
        """The checked bytes under the blob's key, once sent; nothing is named when the upload fails."""
        if self._upload is None:
            raise AssertionError("publish before check")
        try:
            return self._upload.result()
        finally:
            self.abort()

    def _send(self) -> str:
        import obstore

        key = self.store.key(self.expected_sha256)
        self._spool.seek(0)
        if self.size <= PART_BYTES:
            _call(obstore.put, self.store.client, key, self._spool.read(), use_multipart=False)
        else:
            _call(obstore.put, self.store.client, key, self._parts(), chunk_size=PART_BYTES)
        self.store.record.add(self.expected_sha256)
        sys.audit("gitmirror.crashpoint", "store.published")
        return f"{self.store.settings.url}/{key}"

    def _parts(self) -> Iterator[bytes]:
        while part := self._spool.read(PART_BYTES):
            yield part
            sys.audit("gitmirror.crashpoint", "store.uploading")

    def abort(self) -> None:
        """Drop the local bytes (after an upload under way ends: it reads them)."""
        if self._upload is not None:
            futures.wait([self._upload])
        self._spool.close()

    def __enter__(self) -> S3Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class _RawReader(io.RawIOBase):
    """obstore's ``ReadableFile`` as a raw stream (its reads return obstore ``Bytes``; zipfile wants bytes)."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._file.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = memoryview(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._file.seek(offset, whence))

    def tell(self) -> int:
        return int(self._file.tell())

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def _record_key(settings: S3Settings) -> str:
    """Which bucket and prefix at which endpoint a local record describes, in 16 hex digits."""
    where = f"{endpoint_url(settings) or 'aws'}|{settings.bucket}|{settings.prefix}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """An obstore call whose failures other than a missing object read as one ``S3Error`` line."""
    try:
        return function(*args, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - obstore's errors carry the whole request; keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise S3Error(first) from exc

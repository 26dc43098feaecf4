"""A hermetic, fault-injecting fake of a Python "simple" package index.

gitmirror's tests must never reach a real package index: results would depend
on the network and on whatever was uploaded upstream that day.  This module
gives them a local stand-in that is good enough to fool real installers (pip
and uv install from it), while letting a test reshape the index at run time
(add, yank, remove, replace files, set a PEP 792 project status) and inject
the failures a mirror has to survive (HTTP errors, stalls, truncated or reset
transfers, wrong hashes, garbage or huge pages, redirect loops).

Everything is standard library plus ``packaging``; artifacts are built in
memory and are byte-for-byte deterministic so tests can compare bytes.
"""

from __future__ import annotations

import base64
import csv
import enum
import gzip
import hashlib
import html
import io
import json
import random
import socket
import socketserver
import struct
import sys
import tarfile
import threading
import xmlrpc.client
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from packaging.requirements import Requirement
from packaging.tags import parse_tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

__all__ = [
    "FROM_ARTIFACT",
    "FAULT_KINDS",
    "PROJECT_STATUSES",
    "Artifact",
    "Fault",
    "FakeUpstream",
    "RequestRecord",
    "build_sdist",
    "build_wheel",
    "make_sample_index",
]

# --------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------

#: Fixed timestamp stamped into every archive member, so that building the same
#: artifact twice yields identical bytes (and identical sha256 digests).
_ZIP_DATE_TIME = (2020, 2, 2, 0, 0, 0)
_TAR_MTIME = int(datetime(2020, 2, 2, tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class Artifact:
    """One distribution file as an index would serve it.

    ``metadata`` is the core metadata (the wheel's ``METADATA``) which the
    index also serves on its own at ``<file URL>.metadata`` (PEP 658), or
    ``None`` when there is none to serve (sdists).  ``requires_python`` is what
    :meth:`FakeUpstream.add` announces by default.
    """

    filename: str
    data: bytes
    metadata: bytes | None = None
    requires_python: str | None = None

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of the file (cached: payloads may be large)."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    @cached_property
    def metadata_sha256(self) -> str | None:
        return None if self.metadata is None else hashlib.sha256(self.metadata).hexdigest()

    @property
    def version(self) -> Version | None:
        """Version parsed from the filename, ``None`` if it is not a wheel/sdist name."""
        return _version_from_filename(self.filename)

    @classmethod
    def from_path(cls, path: str | Path) -> Artifact:
        """Wrap an existing wheel or sdist (e.g. a real build backend for install tests).

        For wheels the ``METADATA`` member and its ``Requires-Python`` are picked
        up, so the file is announced exactly as a real index would announce it.
        """
        path = Path(path)
        data = path.read_bytes()
        metadata: bytes | None = None
        requires_python: str | None = None
        if path.name.endswith(".whl"):
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for member in zf.namelist():
                    parts = member.split("/")
                    if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                        metadata = zf.read(member)
                        break
            if metadata is not None:
                requires_python = BytesHeaderParser().parsebytes(metadata).get("Requires-Python")
        return cls(path.name, data, metadata, requires_python)


def _version_from_filename(filename: str) -> Version | None:
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def _escaped_name(name: str) -> str:
    """Distribution name as wheel/sdist filenames and import names spell it."""
    return canonicalize_name(name).replace("-", "_")


def _payload(seed: str, size: int) -> bytes:
    """``size`` pseudo-random bytes, always the same for the same seed.

    Random so that compression cannot shrink it (size tests measure what they ask for).
    """
    return random.Random(seed).randbytes(size) if size > 0 else b""


def _core_metadata(
    name: str,
    version: str,
    *,
    requires_python: str | None,
    requires_dist: Sequence[str],
    extras: Sequence[str],
    summary: str = "",
    author: str = "",
    home_page: str = "",
) -> bytes:
    for req in requires_dist:
        Requirement(req)  # fail at build time, not inside an installer
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if summary:
        lines.append(f"Summary: {summary}")
    if home_page:
        lines.append(f"Home-page: {home_page}")
    if author:
        lines.append(f"Author: {author}")
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Provides-Extra: {extra}" for extra in extras]
    lines += [f"Requires-Dist: {req}" for req in requires_dist]
    return ("\n".join(lines) + "\n\n").encode()


def _record_hash(data: bytes) -> str:
    """RECORD hash format: urlsafe base64 of the sha256 digest, without padding."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def build_wheel(
    name: str,
    version: str,
    *,
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    extras: Sequence[str] = (),
    tag: str = "py3-none-any",
    summary: str = "",
    author: str = "",
    home_page: str = "",
    payload_size: int = 0,
) -> Artifact:
    """Build a real, installable wheel in memory.

    Contents: ``<module>/__init__.py`` with ``__version__``, an optional
    ``<module>/payload.bin`` of ``payload_size`` deterministic bytes, and a
    ``.dist-info`` with METADATA, WHEEL and a RECORD whose hashes are correct
    (pip and uv check them).  ``<module>`` is the normalized name with
    underscores (``demo-pkg`` -> ``demo_pkg``).  Same inputs, same bytes.
    """
    dist = _escaped_name(name)
    ver = str(Version(version))
    tags = sorted(str(t) for t in parse_tag(tag))  # validates ``tag`` too
    dist_info = f"{dist}-{ver}.dist-info"
    metadata = _core_metadata(
        name,
        ver,
        requires_python=requires_python,
        requires_dist=requires_dist,
        extras=extras,
        summary=summary,
        author=author,
        home_page=home_page,
    )
    wheel_file = "Wheel-Version: 1.0\nGenerator: fakeupstream\nRoot-Is-Purelib: true\n"
    wheel_file += "".join(f"Tag: {t}\n" for t in tags)

    members: list[tuple[str, bytes]] = [(f"{dist}/__init__.py", f'__version__ = "{ver}"\n'.encode())]
    if payload_size:
        members.append((f"{dist}/payload.bin", _payload(f"{dist}-{ver}-{tag}", payload_size)))
    members += [(f"{dist_info}/METADATA", metadata), (f"{dist_info}/WHEEL", wheel_file.encode())]

    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, content in members:
        writer.writerow([path, _record_hash(content), len(content)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    members.append((f"{dist_info}/RECORD", record.getvalue().encode()))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, content in members:
            info = zipfile.ZipInfo(path, date_time=_ZIP_DATE_TIME)
            info.create_system = 3  # unix, whatever the host
            info.external_attr = 0o644 << 16
            # Random payload does not compress; storing it keeps big builds fast.
            info.compress_type = zipfile.ZIP_STORED if path.endswith("payload.bin") else zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return Artifact(
        filename=f"{dist}-{ver}-{tag}.whl",
        data=buf.getvalue(),
        metadata=metadata,
        requires_python=requires_python,
    )


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def build_sdist(
    name: str,
    version: str,
    *,
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    payload_size: int = 0,
) -> Artifact:
    """Build a real sdist (``.tar.gz``) that setuptools can build a wheel from.

    Layout ``<escaped>-<ver>/{PKG-INFO,pyproject.toml,<module>/__init__.py}``
    (names escaped as the sdist spec says).  Members have fixed mtimes/owners
    and the gzip header has mtime 0, so the bytes are deterministic.
    """
    dist = _escaped_name(name)
    ver = str(Version(version))
    top = f"{dist}-{ver}"
    pkg_info = _core_metadata(name, ver, requires_python=requires_python, requires_dist=requires_dist, extras=())
    pyproject = [
        "[build-system]",
        'requires = ["setuptools>=61"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f"name = {_toml_str(name)}",
        f"version = {_toml_str(ver)}",
    ]
    if requires_python:
        pyproject.append(f"requires-python = {_toml_str(requires_python)}")
    pyproject.append("dependencies = [" + ", ".join(_toml_str(r) for r in requires_dist) + "]")
    pyproject += ["", "[tool.setuptools]", f"packages = [{_toml_str(dist)}]"]
    if payload_size:
        pyproject += ["", "[tool.setuptools.package-data]", f'{_toml_str(dist)} = ["payload.bin"]']
    members: list[tuple[str, bytes]] = [
        (f"{top}/PKG-INFO", pkg_info),
        (f"{top}/pyproject.toml", ("\n".join(pyproject) + "\n").encode()),
        (f"{top}/{dist}/__init__.py", f'__version__ = "{ver}"\n'.encode()),
    ]
    if payload_size:
        members.append((f"{top}/{dist}/payload.bin", _payload(f"{dist}-{ver}-sdist", payload_size)))

    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf,
    ):
        for directory in (top, f"{top}/{dist}"):
            tf.addfile(_tarinfo(directory, 0, tarfile.DIRTYPE, 0o755))
        for path, content in members:
            tf.addfile(_tarinfo(path, len(content), tarfile.REGTYPE, 0o644), io.BytesIO(content))
    return Artifact(filename=f"{top}.tar.gz", data=raw.getvalue(), metadata=None, requires_python=requires_python)


def _tarinfo(path: str, size: int, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.size, info.type, info.mode, info.mtime = size, kind, mode, _TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# --------------------------------------------------------------------------
# Server state
# --------------------------------------------------------------------------


class _Default(enum.Enum):
    FROM_ARTIFACT = enum.auto()


#: Sentinel: take ``requires_python`` from the artifact (the default of :meth:`FakeUpstream.add`).
FROM_ARTIFACT = _Default.FROM_ARTIFACT

#: Allowed PEP 792 project statuses.
PROJECT_STATUSES = frozenset({"active", "archived", "quarantined", "deprecated"})

#: Faults acting on the connection/response of any matching request.
_REQUEST_FAULTS = frozenset({"status", "delay", "truncate", "reset", "longer", "redirect_loop", "trickle", "endless"})
#: Faults that shape how a response's body is sent.
_TRANSPORT_FAULTS = frozenset({"truncate", "reset", "longer", "trickle", "endless"})
#: Faults replacing a ``/simple/...`` page.
_PAGE_FAULTS = frozenset({"invalid_page", "huge_page"})
#: Faults matched against filenames while a project page is rendered.
_RENDER_FAULTS = frozenset({"wrong_hash"})
FAULT_KINDS = _REQUEST_FAULTS | _PAGE_FAULTS | _RENDER_FAULTS

API_VERSION = "1.4"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_V1_TYPE = "application/vnd.pypi.simple.v1+html"
TEXT_HTML_TYPE = "text/html"
_TYPE_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_TYPE,
    "application/vnd.pypi.simple.latest+html": HTML_V1_TYPE,
}


@dataclass
class Fault:
    """An injected fault; ``remaining`` counts down (``-1`` = forever) so tests can see it fired."""

    match: str
    kind: str
    remaining: int
    params: dict[str, Any]

    @property
    def exhausted(self) -> bool:
        return self.remaining == 0


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it, with the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    status: int


@dataclass
class _File:
    artifact: Artifact
    upload_time: datetime
    yanked: bool | str
    requires_python: str | None
    core_metadata: bool
    provenance: bytes | None = None  # PEP 740, served at the file's URL + ".provenance"
    provenance_url: str | None = None  # announced instead of that URL (another host, say)


@dataclass
class _Project:
    name: str
    files: dict[str, _File] = field(default_factory=dict)
    last_serial: int = 0
    status: str | None = None
    status_reason: str | None = None
    tracks: list[str] = field(default_factory=list)  # PEP 708
    alternate_locations: list[str] = field(default_factory=list)


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterator[bytes] = b""


def _to_datetime(value: str | datetime | None) -> datetime:
    if value is None:
        value = datetime.now(UTC)
    elif isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def negotiate(accept: str | None) -> str | None:
    """Pick the page format for an ``Accept`` header, as PEP 691 describes.

    Highest q wins; ties go to an explicitly listed type over a wildcard, then
    to the type listed first; ``*/*`` or no header means ``text/html``.
    Returns ``None`` when nothing acceptable is on offer (-> 406).
    """
    if not accept or not accept.strip():
        return TEXT_HTML_TYPE
    entries: list[tuple[str, float, int]] = []
    for pos, part in enumerate(accept.split(",")):
        fields = part.split(";")
        mtype = _TYPE_ALIASES.get(fields[0].strip().lower(), fields[0].strip().lower())
        q = 1.0
        for param in fields[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        entries.append((mtype, q, pos))
    best: tuple[tuple[float, int, int, int], str] | None = None
    for pref, candidate in enumerate((TEXT_HTML_TYPE, HTML_V1_TYPE, JSON_TYPE)):
        match: tuple[int, float, int] | None = None
        for mtype, q, pos in entries:
            if mtype == candidate:
                specificity = 2
            elif mtype == candidate.split("/")[0] + "/*":
                specificity = 1
            elif mtype == "*/*":
                specificity = 0
            else:
                continue
            if match is None or specificity > match[0]:
                match = (specificity, q, pos)
        if match is None or match[1] <= 0:
            continue
        key = (match[1], match[0], -match[2], -pref)
        if best is None or key > best[0]:
            best = (key, candidate)
    return None if best is None else best[1]


# --------------------------------------------------------------------------
# The fake index
# --------------------------------------------------------------------------


class FakeUpstream:
    """A PEP 503/691 simple index on ``127.0.0.1`` (random port), in a daemon thread.

    All state is mutable while serving and guarded by one lock, so a test can
    change the index between (or during) a client's requests.  Every mutation
    bumps a global serial and stamps it on the project, like the real index's
    ``X-PyPI-Last-Serial``.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._projects: dict[str, _Project] = {}
        self._serial = 0
        self._faults: list[Fault] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: Every request answered, oldest first (see :class:`RequestRecord`).
        self.requests: list[RequestRecord] = []
        #: Answer JSON whatever the client accepts (for fallback tests).
        self.json_only = False
        #: Answer ``text/html`` whatever the client accepts (for fallback tests).
        self.html_only = False
        #: the index root's ``X-PyPI-Last-Serial`` (the warm sync path needs it); False: an index without one
        self.send_serial = True
        #: answer XML-RPC ``changelog_since_serial`` at ``POST /pypi`` like the public index; False: 404
        self.xmlrpc = True
        #: JSON pages carry each file's ``size``; False: no size announced (as HTML pages)
        self.announce_sizes = True
        self._journal: list[tuple[str, int]] = []  # (project name, serial) of every mutation

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FakeUpstream:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.upstream = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeupstream", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a "delay" fault
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeUpstream is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Index URL to hand to clients: ``http://127.0.0.1:PORT/simple/``."""
        return f"{self.base_url}/simple/"

    @property
    def files_url(self) -> str:
        return f"{self.base_url}/files/"

    def page_url(self, project: str) -> str:
        return f"{self.url}{canonicalize_name(project)}/"

    def file_url(self, project: str, filename: str) -> str:
        return f"{self.files_url}{canonicalize_name(project)}/{quote(filename)}"

    @property
    def serial(self) -> int:
        """Global serial: incremented on every mutation."""
        with self._lock:
            return self._serial

    def last_serial(self, project: str) -> int:
        with self._lock:
            return self._project(project).last_serial

    # -- state mutation ----------------------------------------------------

    def _project(self, project: str) -> _Project:
        try:
            return self._projects[canonicalize_name(project)]
        except KeyError:
            raise KeyError(f"unknown project {project!r}") from None

    def _file(self, project: str, filename: str) -> tuple[_Project, _File]:
        proj = self._project(project)
        try:
            return proj, proj.files[filename]
        except KeyError:
            raise KeyError(f"{project!r} has no file {filename!r}") from None

    def _bump(self, proj: _Project | None, name: str | None = None) -> None:
        self._serial += 1
        if proj is not None:
            proj.last_serial = self._serial
        self._journal.append((proj.name if proj is not None else name or "", self._serial))

    def changelog_since(self, serial: int) -> list[list[object]]:
        """XML-RPC ``changelog_since_serial``: [name, version, timestamp, action, serial] rows."""
        with self._lock:
            return [[name, "", 0, "changed", number] for name, number in self._journal if number > serial]

    def add(
        self,
        project: str,
        artifact: Artifact,
        *,
        upload_time: str | datetime | None = None,
        yanked: bool | str = False,
        requires_python: str | None | _Default = FROM_ARTIFACT,
        core_metadata: bool = True,
    ) -> None:
        """Publish ``artifact`` under ``project`` (created on first use, display name kept).

        ``upload_time`` defaults to now; ``core_metadata=False`` hides the PEP 658
        metadata even if the artifact has some.  Re-adding a filename is an
        error: use :meth:`replace_file` to model a conflicting re-upload.
        """
        rp = artifact.requires_python if requires_python is FROM_ARTIFACT else requires_python
        assert not isinstance(rp, _Default)
        with self._lock:
            key = canonicalize_name(project)
            proj = self._projects.setdefault(key, _Project(name=project))
            if artifact.filename in proj.files:
                raise ValueError(f"{artifact.filename} already exists in {project!r}")
            proj.files[artifact.filename] = _File(
                artifact=artifact,
                upload_time=_to_datetime(upload_time),
                yanked=yanked,
                requires_python=rp,
                core_metadata=core_metadata and artifact.metadata is not None,
            )
            self._bump(proj)

    def remove_file(self, project: str, filename: str) -> None:
        with self._lock:
            proj, _ = self._file(project, filename)
            del proj.files[filename]
            self._bump(proj)

    def remove_project(self, project: str) -> None:
        with self._lock:
            self._project(project)
            removed = self._projects.pop(canonicalize_name(project))
            self._bump(None, removed.name)

    def yank(self, project: str, filename: str, reason: str | bool = True) -> None:
        """PEP 592 yank; ``reason=True`` yanks without a reason."""
        with self._lock:
            proj, f = self._file(project, filename)
            f.yanked = reason
            self._bump(proj)

    def unyank(self, project: str, filename: str) -> None:
        self.yank(project, filename, False)

    def replace_file(self, project: str, filename: str, new_bytes: bytes) -> Artifact:
        """Serve other bytes under the same filename (an upstream "conflict"); the page follows."""
        with self._lock:
            proj, f = self._file(project, filename)
            old = f.artifact
            f.artifact = Artifact(filename, new_bytes, old.metadata, old.requires_python)
            self._bump(proj)
            return f.artifact

    def set_status(self, project: str, status: str | None, reason: str | None = None) -> None:
        """Set the PEP 792 status (``None`` clears it).

        A quarantined project is listed without files and its files answer 404,
        as PEP 792 asks of an index.
        """
        if status is not None and status not in PROJECT_STATUSES:
            raise ValueError(f"unknown project status {status!r}")
        with self._lock:
            proj = self._project(project)
            proj.status, proj.status_reason = status, reason
            self._bump(proj)

    def set_provenance(self, project: str, filename: str, data: bytes | None, url: str | None = None) -> None:
        """Serve ``data`` as the file's PEP 740 provenance object at its URL + ``.provenance`` and
        announce it on the page (``url``: announce that URL instead); ``None`` stops announcing it."""
        with self._lock:
            proj, f = self._file(project, filename)
            f.provenance, f.provenance_url = data, url
            self._bump(proj)

    def set_pep708(self, project: str, tracks: Sequence[str] = (), alternate_locations: Sequence[str] = ()) -> None:
        """The project page's PEP 708 ``tracks`` and ``alternate-locations``."""
        with self._lock:
            proj = self._project(project)
            proj.tracks, proj.alternate_locations = list(tracks), list(alternate_locations)
            self._bump(proj)

    def artifact(self, project: str, filename: str) -> Artifact:
        """The artifact currently served under that name."""
        with self._lock:
            return self._file(project, filename)[1].artifact

    # -- faults ------------------------------------------------------------

    def fault(self, match: str, kind: str, *, times: int = 1, **params: Any) -> Fault:
        """Inject a fault on requests whose path contains ``match``.

        Kinds and params:

        * ``status``: answer ``code`` (default 500), ``retry_after`` seconds -> Retry-After.
        * ``delay``: wait ``seconds`` (default 1.0) then answer normally.
        * ``truncate``: full Content-Length, half the body, then close.
        * ``reset``: headers and part of the body, then a TCP RST.
        * ``longer``: append ``extra`` bytes; Content-Length counts them unless
          ``match_content_length=False`` (then it counts only the real body).
        * ``redirect_loop``: 302 to the same URL.
        * ``trickle``: the real head (Content-Length included), then the body one byte
          every ``interval`` seconds (default 1.0).
        * ``endless``: 200 with no Content-Length and a body that never ends (``piece``
          bytes at a time, default 65536), delimited by the connection's end, or
          ``chunked=True``; it stops only when the client goes away.
        * ``invalid_page``: a ``/simple/`` page answers garbage (or ``body``).
        * ``huge_page``: a ``/simple/`` page lists ``entries`` (default 200 000)
          bogus files, streamed with chunked encoding.
        * ``wrong_hash``: ``match`` is a filename substring; the next ``times``
          page renders announce a wrong sha256 for those files.

        The first matching fault wins; each hit consumes one of ``times``
        (``-1`` = forever).  Returns the :class:`Fault` so tests can check
        ``remaining``.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if times == 0 or times < -1:
            raise ValueError("times must be >= 1, or -1 for forever")
        fault = Fault(match=match, kind=kind, remaining=times, params=params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _consume(self, fault: Fault) -> None:
        if fault.remaining > 0:
            fault.remaining -= 1
        if fault.remaining == 0:
            self._faults.remove(fault)

    def _take_fault(self, path: str) -> Fault | None:
        is_page = path.startswith("/simple")
        with self._lock:
            for fault in self._faults:
                if fault.match not in path:
                    continue
                if fault.kind in _REQUEST_FAULTS or (fault.kind in _PAGE_FAULTS and is_page):
                    self._consume(fault)
                    return fault
        return None

    def _take_wrong_hash(self, filenames: Iterable[str]) -> set[str]:
        hit: set[str] = set()
        names = list(filenames)
        with self._lock:
            for fault in list(self._faults):
                if fault.kind != "wrong_hash":
                    continue
                matched = {n for n in names if fault.match in n}
                if matched:
                    hit |= matched
                    self._consume(fault)
        return hit

    # -- request log -------------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def count(self, path_substring: str | None = None, status: int | None = None, method: str | None = None) -> int:
        """How many recorded requests match all the given filters."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (path_substring is None or path_substring in r.path)
                and (status is None or r.status == status)
                and (method is None or r.method == method)
            )

    # -- rendering ---------------------------------------------------------

    def _fmt_for(self, accept: str | None) -> str | None:
        if self.html_only:
            return TEXT_HTML_TYPE
        if self.json_only:
            return JSON_TYPE
        return negotiate(accept)

    def _route(self, path: str, accept: str | None, page_fault: Fault | None) -> _Response:
        if path == "/simple":
            return _redirect("/simple/", 301)
        if path.startswith("/simple/"):
            fmt = self._fmt_for(accept)
            if fmt is None:
                return _text(406, "Not Acceptable: ask for JSON or HTML\n")
            if path == "/simple/":
                if page_fault is not None:
                    return self._faulty_page(page_fault, fmt, None)
                return self._index_page(fmt)
            name = path[len("/simple/") :]
            if name.endswith("/"):
                name = name[:-1]
            if not name or "/" in name:
                return _text(404, "Not Found\n")
            key = canonicalize_name(name)
            with self._lock:
                if key not in self._projects:
                    return _text(404, "Not Found\n")
            if path != f"/simple/{key}/":
                return _redirect(f"/simple/{key}/", 301)
            if page_fault is not None:
                return self._faulty_page(page_fault, fmt, key)
            return self._project_page(key, fmt)
        if path.startswith("/files/"):
            parts = path[len("/files/") :].split("/")
            if len(parts) == 2:
                return self._file_response(*parts)
        return _text(404, "Not Found\n")

    def _index_page(self, fmt: str) -> _Response:
        with self._lock:
            serial = self._serial
            names = sorted((p.name for p in self._projects.values()), key=canonicalize_name)
        if fmt == JSON_TYPE:
            doc = {
                "meta": {"api-version": API_VERSION, "_last-serial": serial},
                "projects": [{"name": n} for n in names],
            }
            body = json.dumps(doc, indent=1).encode()
        else:
            links = "".join(
                f'    <a href="/simple/{canonicalize_name(n)}/">{html.escape(n)}</a><br />\n' for n in names
            )
            body = _html_document("Simple index", [], links)
        return _page(fmt, body, serial if self.send_serial else None)

    def _project_page(self, key: str, fmt: str) -> _Response:
        with self._lock:
            proj = self._projects[key]
            files = [] if proj.status == "quarantined" else list(proj.files.values())
            serial, status, reason = proj.last_serial, proj.status, proj.status_reason
            tracks, alternates = list(proj.tracks), list(proj.alternate_locations)
        wrong = self._take_wrong_hash(f.artifact.filename for f in files)
        entries = []
        for f in files:
            art = f.artifact
            sha = art.sha256
            if art.filename in wrong:
                sha = hashlib.sha256(art.data + b"\0wrong").hexdigest()
            entries.append((f, sha))
        versions = sorted({v for f in files if (v := f.artifact.version) is not None})

        if fmt == JSON_TYPE:
            json_files: list[dict[str, Any]] = []
            for f, sha in entries:
                art = f.artifact
                item: dict[str, Any] = {
                    "filename": art.filename,
                    "url": self.file_url(key, art.filename),
                    "hashes": {"sha256": sha},
                }
                if f.requires_python:
                    item["requires-python"] = f.requires_python
                item["yanked"] = f.yanked
                if self.announce_sizes:
                    item["size"] = art.size
                item["upload-time"] = _iso(f.upload_time)
                meta: dict[str, str] | bool = False
                if f.core_metadata and art.metadata_sha256:
                    meta = {"sha256": art.metadata_sha256}
                item["core-metadata"] = meta
                item["data-dist-info-metadata"] = meta
                if f.provenance is not None:
                    item["provenance"] = f.provenance_url or self.file_url(key, art.filename) + ".provenance"
                json_files.append(item)
            doc: dict[str, Any] = {
                "meta": {"api-version": API_VERSION, "_last-serial": serial},
                "name": key,
                "files": json_files,
                "versions": [str(v) for v in versions],
            }
            if status is not None:
                doc["project-status"] = {"status": status} | ({"reason": reason} if reason is not None else {})
            if tracks:
                doc["tracks"] = tracks
            if alternates:
                doc["alternate-locations"] = alternates
            body = json.dumps(doc, indent=1).encode()
        else:
            metas = []
            if status is not None:
                metas.append(("pypi:project-status", status))
                if reason is not None:
                    metas.append(("pypi:project-status-reason", reason))
            metas += [("pypi:tracks", url) for url in tracks]
            metas += [("pypi:alternate-locations", url) for url in alternates]
            links = []
            for f, sha in entries:
                art = f.artifact
                attrs = [("href", f"{self.file_url(key, art.filename)}#sha256={sha}")]
                if f.requires_python:
                    attrs.append(("data-requires-python", f.requires_python))
                if f.yanked is not False:
                    attrs.append(("data-yanked", "" if f.yanked is True else str(f.yanked)))
                if f.core_metadata and art.metadata_sha256:
                    attrs.append(("data-core-metadata", f"sha256={art.metadata_sha256}"))
                    attrs.append(("data-dist-info-metadata", f"sha256={art.metadata_sha256}"))
                if f.provenance is not None:
                    attrs.append(
                        ("data-provenance", f.provenance_url or f"{self.file_url(key, art.filename)}.provenance")
                    )
                rendered = " ".join(f'{k}="{html.escape(v, quote=True)}"' for k, v in attrs)
                links.append(f"    <a {rendered}>{html.escape(art.filename)}</a><br />\n")
            body = _html_document(f"Links for {key}", metas, "".join(links))
        return _page(fmt, body, serial)

    def _faulty_page(self, fault: Fault, fmt: str, key: str | None) -> _Response:
        """Answer a ``/simple/`` page (``key=None``: the project list) per a page fault."""
        ctype = _content_type(fmt)
        if fault.kind == "invalid_page":
            default = b'{"meta": {"api-version": ' if fmt == JSON_TYPE else b"\x00\xff<a href=<<</html"
            body = fault.params.get("body", default)
            return _Response(200, [("Content-Type", ctype)], body)
        entries = int(fault.params.get("entries", 200_000))
        return _Response(200, [("Content-Type", ctype)], self._huge_body(fmt, key, entries))

    def _huge_body(self, fmt: str, key: str | None, entries: int) -> Iterator[bytes]:
        """Stream a page with ``entries`` bogus files (or projects), a batch per chunk."""
        files_url, serial, batch = self.files_url, self.serial, 2000

        def entry(i: int) -> tuple[str, str, str]:
            """(name, url, sha256) of the i-th bogus entry."""
            if key is None:
                return f"bogus-{i}", f"/simple/bogus-{i}/", ""
            filename = f"{_escaped_name(key)}-0.0.{i}.tar.gz"
            return filename, f"{files_url}{key}/{filename}", f"{i:064x}"

        batches = (range(start, min(start + batch, entries)) for start in range(0, entries, batch))
        if fmt == JSON_TYPE:
            meta = json.dumps({"api-version": API_VERSION, "_last-serial": serial})
            if key is None:
                yield f'{{"meta": {meta}, "projects": ['.encode()
            else:
                yield f'{{"meta": {meta}, "name": {json.dumps(key)}, "versions": [], "files": ['.encode()
            for n, indexes in enumerate(batches):
                items = []
                for i in indexes:
                    name, url, sha = entry(i)
                    items.append(
                        {"name": name} if key is None else {"filename": name, "url": url, "hashes": {"sha256": sha}}
                    )
                yield ("," if n else "").encode() + ",".join(json.dumps(it) for it in items).encode()
            yield b"]}"
        else:
            yield _html_document(f"Links for {key or 'all'}", [], "").split(b"  </body>")[0]
            for indexes in batches:
                links = []
                for i in indexes:
                    name, url, sha = entry(i)
                    href = f"{url}#sha256={sha}" if sha else url
                    links.append(f'    <a href="{href}">{name}</a><br />\n')
                yield "".join(links).encode()
            yield b"  </body>\n</html>\n"

    def _file_response(self, project: str, filename: str) -> _Response:
        key = canonicalize_name(project)
        want_metadata = False
        with self._lock:
            proj = self._projects.get(key)
            if proj is None or proj.status == "quarantined" or project != key:
                return _text(404, "Not Found\n")
            f = proj.files.get(filename)
            provenance = proj.files.get(filename.removesuffix(".provenance"))
            if f is None and provenance is not None and provenance.provenance is not None:
                return _Response(200, [("Content-Type", "application/json")], provenance.provenance)
            if f is None and filename.endswith(".metadata"):
                f = proj.files.get(filename[: -len(".metadata")])
                want_metadata = True
            if f is None or (want_metadata and not f.core_metadata):
                return _text(404, "Not Found\n")
            data = f.artifact.metadata if want_metadata else f.artifact.data
            serial = proj.last_serial
        assert data is not None
        return _Response(
            200,
            [
                ("Content-Type", "application/octet-stream"),
                ("ETag", f'"{hashlib.sha256(data).hexdigest()}"'),
                ("X-PyPI-Last-Serial", str(serial)),
            ],
            data,
        )


def _content_type(fmt: str) -> str:
    return "text/html; charset=utf-8" if fmt == TEXT_HTML_TYPE else fmt


def _page(fmt: str, body: bytes, serial: int | None) -> _Response:
    etag = '"' + hashlib.sha256(fmt.encode() + b"\n" + body).hexdigest()[:32] + '"'
    headers = [("Content-Type", _content_type(fmt)), ("ETag", etag), ("Vary", "Accept")]
    if serial is not None:
        headers.append(("X-PyPI-Last-Serial", str(serial)))
    return _Response(200, headers, body)


def _html_document(title: str, metas: list[tuple[str, str]], links: str) -> bytes:
    head = f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
    head += "".join(
        f'    <meta name="{html.escape(n, quote=True)}" content="{html.escape(c, quote=True)}">\n' for n, c in metas
    )
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f"{head}    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{links}  </body>\n</html>\n"
    ).encode()


def _text(status: int, text: str) -> _Response:
    return _Response(status, [("Content-Type", "text/plain; charset=utf-8")], text.encode())


def _redirect(location: str, status: int) -> _Response:
    return _Response(status, [("Location", location), ("Content-Type", "text/plain; charset=utf-8")], b"")


def _etag_matches(if_none_match: str | None, etag: str | None) -> bool:
    if not if_none_match or not etag:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    upstream: FakeUpstream

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (a DNS lookup): skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # clients hanging up (timeouts, injected resets) are expected here
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # drop idle keep-alive connections eventually
    # Headers and body go out in separate writes; with Nagle on, delayed ACKs add ~40 ms a request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_POST(self) -> None:
        """XML-RPC at ``/pypi``: ``changelog_since_serial`` only (what a mirror asks)."""
        up = self.server.upstream
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path.rstrip("/") != "/pypi" or not up.xmlrpc:
            self._send(_text(404, "Not Found\n"), head=False, fault=None)
            return
        params, method = xmlrpc.client.loads(body)
        if method == "changelog_since_serial":
            payload = xmlrpc.client.dumps((up.changelog_since(int(params[0])),), methodresponse=True)
        else:
            payload = xmlrpc.client.dumps(xmlrpc.client.Fault(1, f"no method {method}"))
        self._send(_Response(200, [("Content-Type", "text/xml")], payload.encode()), head=False, fault=None)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean; see FakeUpstream.requests instead

    def _dispatch(self, *, head: bool) -> None:
        up = self.server.upstream
        path = unquote(urlsplit(self.path).path)
        try:
            fault = up._take_fault(path)
            if fault is not None and fault.kind == "delay":
                up._stopping.wait(float(fault.params.get("seconds", 1.0)))
                fault = None
            if fault is not None and fault.kind == "status":
                code = int(fault.params.get("code", 500))
                resp = _text(code, f"injected fault: HTTP {code}\n")
                if fault.params.get("retry_after") is not None:
                    resp.headers.append(("Retry-After", str(fault.params["retry_after"])))
            elif fault is not None and fault.kind == "redirect_loop":
                resp = _redirect(self.path, 302)
            else:
                page_fault = fault if fault is not None and fault.kind in _PAGE_FAULTS else None
                resp = up._route(path, self.headers.get("Accept"), page_fault)
            if resp.status == 200 and isinstance(resp.body, bytes):
                etag = dict(resp.headers).get("ETag")
                if _etag_matches(self.headers.get("If-None-Match"), etag):
                    resp = _Response(304, [h for h in resp.headers if h[0] != "Content-Type"], b"")
            transport = fault if fault is not None and fault.kind in _TRANSPORT_FAULTS else None
            self._send(resp, head=head, fault=transport)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _send(self, resp: _Response, *, head: bool, fault: Fault | None) -> None:
        up = self.server.upstream
        up._record(RequestRecord(self.command, self.path, dict(self.headers.items()), resp.status))
        if fault is not None and fault.kind == "endless" and resp.status == 200 and not head:
            self._send_endless(resp, fault)
            return
        body = resp.body
        declared: int | None = None
        if isinstance(body, bytes):
            declared = len(body)
            if fault is not None and fault.kind == "longer":
                extra = fault.params.get("extra", b"\nEXTRA BYTES BEYOND THE ANNOUNCED SIZE\n")
                body += extra
                if fault.params.get("match_content_length", True):
                    declared = len(body)
                else:
                    self.close_connection = True
        self.send_response(resp.status)
        for name, value in resp.headers:
            self.send_header(name, value)
        chunked = not isinstance(body, bytes)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif resp.status != 304:
            self.send_header("Content-Length", str(declared))
        if fault is not None and fault.kind in {"truncate", "reset"}:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if head or resp.status == 304:
            return
        if isinstance(body, bytes):
            if fault is not None and fault.kind == "trickle":
                interval = float(fault.params.get("interval", 1.0))
                for index in range(len(body)):
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                    if up._stopping.wait(interval):
                        break
            elif fault is not None and fault.kind in {"truncate", "reset"}:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                if fault.kind == "reset":
                    self._reset()
            else:
                self.wfile.write(body)
            return
        for chunk in body:
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def _send_endless(self, resp: _Response, fault: Fault) -> None:
        """A 200 whose body never ends, until the client hangs up (or the fake stops)."""
        chunked = bool(fault.params.get("chunked", False))
        piece = b"x" * int(fault.params.get("piece", 65536))
        self.close_connection = True
        self.send_response(200)
        for name, value in resp.headers:
            if name.lower() not in ("content-length", "etag"):
                self.send_header(name, value)
        self.send_header("Transfer-Encoding" if chunked else "Connection", "chunked" if chunked else "close")
        self.end_headers()
        framed = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
        while not self.server.upstream._stopping.is_set():
            self.wfile.write(framed)  # a client gone: ConnectionError, which ends the request

    def _reset(self) -> None:
        """Abort the connection with a RST (SO_LINGER 0) instead of a clean FIN."""
        # Give the client a moment to read the headers, so it fails mid-body.
        self.server.upstream._stopping.wait(0.05)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # the socket only really closes once its file objects are gone
        self.connection.close()
        self.close_connection = True


# --------------------------------------------------------------------------
# Sample data
# --------------------------------------------------------------------------


def make_sample_index(up: FakeUpstream) -> dict[str, list[Artifact]]:
    """Populate ``up`` with a small realistic index; return ``{normalized project: [artifacts]}``.

    * ``demo-pkg`` 1.0, 1.1 (yanked: "broken build") and 2.0 (Requires-Python
      ``>=3.99``, so no real interpreter takes it), each a wheel and an sdist,
      uploaded a week apart starting 60 days ago.  An installer asking for
      ``demo-pkg`` must therefore end up with 1.0.
    * ``other_lib`` (normalizes to ``other-lib``) 0.1 and 0.2 wheels; 0.2
      depends on ``demo-pkg>=1.0``.
    """
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=60)
    added: dict[str, list[Artifact]] = {"demo-pkg": [], "other-lib": []}
    demo_versions: list[tuple[str, str, str | bool]] = [
        ("1.0", ">=3.8", False),
        ("1.1", ">=3.8", "broken build"),
        ("2.0", ">=3.99", False),
    ]
    for i, (version, requires_python, yanked) in enumerate(demo_versions):
        when = start + timedelta(days=7 * i)
        wheel = build_wheel(
            "demo-pkg",
            version,
            requires_python=requires_python,
            summary="A demo package for gitmirror tests",
            author="Fake Upstream",
            home_page="http://127.0.0.1/demo-pkg",
        )
        sdist = build_sdist("demo-pkg", version, requires_python=requires_python)
        for art in (wheel, sdist):
            up.add("demo-pkg", art, upload_time=when, yanked=yanked)
            added["demo-pkg"].append(art)
    for i, (version, deps) in enumerate([("0.1", []), ("0.2", ["demo-pkg>=1.0"])]):
        wheel = build_wheel("other_lib", version, requires_python=">=3.8", requires_dist=deps)
        up.add("other_lib", wheel, upload_time=start + timedelta(days=3 + 10 * i))
        added["other-lib"].append(wheel)
    return added

"""Proving with one request that a sync would change nothing: the warm path of a mirror run from cron.

A sync that finds nothing new still asks upstream for every selected project page (conditionally),
re-reads manifests for the dependency closure and pays for importing an HTTP stack: about a second
for a few hundred projects, every few minutes, forever. Yet an index that keeps a changelog says in
one header whether anything at all changed: ``X-PyPI-Last-Serial`` on the index root, the serial a
PEP 691 index exposes as ``meta._last-serial`` (the changelog position bandersnatch follows).

So a sync of the whole configuration that ended cleanly (exit 0) leaves a *record*: the serial
upstream announced **before** the run read its first page, the configuration and the input files it
read, the branch refs it left, the blobs the chosen files need, and its warnings. The next
``gitmirror sync`` repeats that run's outcome without doing it when every one of them still
holds: same gitmirror, same configuration and requirements/lockfile bytes, refs untouched (no
commit, yank, approval or push since), every needed blob still in the store (no directory holding
one changed since; else the full run heals what is missing), and upstream's serial where it was.
Anything else, or any doubt (no serial header, an error), takes the full path, which deletes the
record before it starts: a record never outlives the state it describes.

``gitmirror sync`` calls this first, so the check needs neither dulwich nor even the
configuration parser: the record keeps the settings the check
uses, and the bytes of ``mirror.yaml`` stand for the rest (any edit takes the full path). The
record lives beside the store it describes; a *pointer* from the configuration file to it lives
in the user's cache directory (``$XDG_CACHE_HOME/gitmirror/warm/``, else ``~/.cache/...``), keyed
by the file's absolute path, since the store's location is only known after parsing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from .. import __version__
from ..model.layout import BLOBS_DIR

if TYPE_CHECKING:
    from ..upstream.transport import Transport
    from .config import Config

SCHEMA = 2
SERIAL_HEADER = "X-PyPI-Last-Serial"
CHECK_TIMEOUT = 10.0  # at most, per request of the check: a slow upstream gets the full run sooner
STATE_DIR = "state"


def state_key(branch: str, upstream: str) -> str:
    """Names the per-branch, per-upstream files under ``<store>/state/`` (shared with ``state.py``)."""
    return hashlib.sha256(f"{branch}\n{upstream}".encode()).hexdigest()[:16]


def record_path(config: Config, branch: str) -> Path:
    return Path(config.store) / STATE_DIR / f"unchanged-{state_key(branch, config.upstream)}.json"


def config_file(argument: Path | None) -> Path | None:
    """The configuration file a command reads (``--config``, else ``./mirror.yaml``), absolute."""
    path = argument if argument is not None else Path("mirror.yaml")
    return path.resolve() if path.is_file() else None


def pointer_path(config_path: Path) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(str(config_path).encode()).hexdigest()[:32]
    return Path(cache) / "gitmirror" / "warm" / key


def refs_digest(repo: Path, branches: Iterable[str]) -> str:
    """The bytes of the refs a sync reads or moves: any commit, yank, approval or push changes them.

    Raw bytes, not parsed refs: a ref that moved and came back, or was merely packed, reads as a
    change, which only costs a full run.
    """
    digest = hashlib.sha256()
    for name in [*(f"refs/heads/{branch}" for branch in sorted(set(branches))), "packed-refs"]:
        try:
            content = (Path(repo) / name).read_bytes()
        except FileNotFoundError:
            content = b"-"
        digest.update(f"{name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()


def text_digest(text: str) -> str:
    """Of a requirements file or lockfile as the selection reads it (text, universal newlines)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_digest(path: Path) -> str | None:
    try:
        return text_digest(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def upstream_serial(upstream: str, timeout: float) -> str | None:
    """Upstream's changelog serial from a ``HEAD`` of the index root, or None when it cannot say.

    One request through the transport every request uses (trust, proxies, host policy); no redirect
    is followed, and anything unexpected is None: the full run decides.
    """
    from ..upstream.transport import FetchError, Transient

    transport = _check_transport(upstream, timeout)
    try:
        status, headers = transport.head(upstream, {"Accept": "application/vnd.pypi.simple.v1+json"})
    except (FetchError, Transient, ValueError, OSError):
        return None
    finally:
        transport.close()
    return serial_of(status, headers)


def _check_transport(upstream: str, timeout: float) -> Transport:
    """The transport of the check's requests: the sync's rules, a shorter deadline."""
    from ..model.hosts import HostPolicy
    from ..model.limits import Limits
    from ..upstream.transport import Transport

    return Transport(HostPolicy(upstream), min(timeout, CHECK_TIMEOUT), Limits(deadline=CHECK_TIMEOUT), connections=1)


def serial_of(status: int, headers: Mapping[str, str]) -> str | None:
    """``X-PyPI-Last-Serial`` of a ``200`` answer (``headers`` looked up case-insensitively), else None."""
    value = next((value for name, value in headers.items() if name.lower() == SERIAL_HEADER.lower()), "").strip()
    return value if status == 200 and value.isdigit() else None


class Record(NamedTuple):
    """What a clean run of the whole configuration leaves, for the next run to compare against.

    A named tuple rather than a dataclass: the warm path imports neither ``dataclasses`` nor ``inspect``.
    """

    serial: str
    config_file: str  # absolute path of mirror.yaml
    config_sha256: str  # of its bytes as the run read them
    upstream: str
    timeout: float
    repo: str
    store: str
    branches: list[str]
    inputs: dict[str, str | None]
    refs: str
    #: the store's leaf directories holding the needed blobs (``blob_dirs``) and their state then
    blob_dirs: str
    blob_dirs_state: str
    projects: int
    #: the run's warnings; a warm run shows none of them again (each is shown once, when it appears)
    warnings: tuple[str, ...] = ()
    version: str = __version__
    schema: int = SCHEMA

    def save(self, path: Path, names: Iterable[str] | None = None) -> None:
        """Beside the store, then the pointer to it (best effort: a cache directory may be read-only).

        ``names``: the normalized names of every project the run checked (its closure), kept in a
        file of their own (``names_path``), read only when upstream's serial moved.
        """
        if names is not None:
            _write_atomically(names_path(path), "".join(f"{name}\n" for name in sorted(names)))
        _write_atomically(path, json.dumps(self._asdict(), separators=(",", ":")))
        with contextlib.suppress(OSError):
            _write_atomically(pointer_path(Path(self.config_file)), str(path.resolve()))

    @classmethod
    def load(cls, path: Path) -> Record | None:
        try:
            data = json.loads(path.read_text())
            record = cls(**data)
        except (OSError, ValueError, TypeError):
            return None
        return record if record.schema == SCHEMA and record.version == __version__ else None


def _write_atomically(path: Path, text: str) -> None:
    """Temporary file, rename: a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def names_path(record_file: Path) -> Path:
    return record_file.with_name(record_file.name + ".names")


def blob_dirs(digests: Iterable[str]) -> str:
    """The leaf directories (``blobs/<aa>/<bb>``) of ``digests`` as their sorted 4-digit prefixes, joined."""
    return "".join(sorted({digest[:4] for digest in digests}))


def blob_dirs_state(store: str, dirs: str) -> str | None:
    """A digest of the inode and modification time of each directory ``blob_dirs`` names; None when
    one is gone. Removing or adding a blob changes its directory's time, so an equal digest means
    none of them lost a blob: one ``stat`` per directory (at most 65,536) instead of one per blob."""
    stats = blob_dir_stats(store, dirs)
    if stats is None or GONE in stats:
        return None
    return hashlib.sha256(b"".join(stats)).hexdigest()


GONE = b"-\n"  # ``blob_dir_stats`` of a directory that is not there


def blob_dir_stats(store: str, dirs: str) -> list[bytes] | None:
    """``b"inode mtime_ns\\n"`` of each directory ``blob_dirs`` names, in order (``GONE`` for one
    that is not there); None when the store has no blob directory. Each ``stat`` is relative to an
    open descriptor of its parent, which spares the kernel and Python the full path per directory."""
    blobs = os.path.join(store, BLOBS_DIR)
    if not os.path.isdir(blobs):
        return None
    stat, stats, parent, opened = os.stat, [], "", -1
    try:
        for at in range(0, len(dirs), 4):
            if dirs[at : at + 2] != parent:
                if opened >= 0:
                    os.close(opened)
                parent, opened = dirs[at : at + 2], -1
                with contextlib.suppress(OSError):
                    opened = os.open(os.path.join(blobs, parent), os.O_RDONLY | os.O_DIRECTORY)
            try:
                status = stat(dirs[at + 2 : at + 4], dir_fd=opened) if opened >= 0 else None
            except OSError:
                status = None
            stats.append(GONE if status is None else b"%d %d\n" % (status.st_ino, status.st_mtime_ns))
    finally:
        if opened >= 0:
            os.close(opened)
    return stats


def forget(config: Config, branch: str) -> None:
    """Called as a full sync starts: from here on the record may no longer describe the state."""
    record_path(config, branch).unlink(missing_ok=True)


def changed_projects(upstream: str, timeout: float, since: str, until: str) -> set[str] | None:
    """Normalized names of the projects upstream changed after serial ``since``, from its changelog
    (XML-RPC ``changelog_since_serial`` at ``/pypi`` of the index's origin, as Warehouse and
    bandersnatch speak it); None when the index has no such changelog, or it does not reach
    ``until`` (a truncated answer must not pass for "nothing of ours changed").
    """
    import xmlrpc.client  # only when the serial moved
    from xml.parsers.expat import ExpatError

    from ..model.names import UnsafeNameError, normalize
    from ..upstream.transport import FetchError, Transient

    url = urlsplit(upstream)
    unreadable = (OSError, ValueError, TypeError, IndexError, OverflowError, xmlrpc.client.Error, ExpatError)
    transport = _check_transport(upstream, timeout)
    try:
        reached, names = int(since), set()
        for row in transport.call(f"{url.scheme}://{url.netloc}/pypi", "changelog_since_serial", int(since)):
            reached = max(reached, int(row[4]))
            with contextlib.suppress(UnsafeNameError):
                names.add(normalize(str(row[0])))
    except (FetchError, Transient, *unreadable):
        return None  # no changelog to be had (or not one that reads): the full run decides
    finally:
        transport.close()
    return names if reached >= int(until) else None


def still_holds(config_path: Path) -> tuple[Record, str] | None:
    """The record and why it holds, when the last clean run's outcome provably still holds; None for
    a full run.

    When upstream's serial moved, its changelog says whether any project of this mirror was among
    the changes; if none was, the record holds, and is moved to the new serial.
    """
    try:
        record_file = Path(pointer_path(config_path).read_text())
        record = Record.load(record_file)
        config_bytes = config_path.read_bytes()
    except OSError:
        return None
    if record is None or record.config_file != str(config_path):
        return None
    if record.config_sha256 != hashlib.sha256(config_bytes).hexdigest():
        return None
    if any(file_digest(Path(path)) != digest for path, digest in record.inputs.items()):
        return None
    if record.refs != refs_digest(Path(record.repo), record.branches):
        return None
    if blob_dirs_state(record.store, record.blob_dirs) != record.blob_dirs_state:
        return None  # a blob may be gone: the full run re-fetches (heals) what is missing
    serial = upstream_serial(record.upstream, record.timeout)
    if serial is None:
        return None
    if serial == record.serial:
        return record, f"upstream serial {serial} unchanged since the last complete sync"
    changed = changed_projects(record.upstream, record.timeout, record.serial, serial)
    names = _names(record_file) if changed is not None else None
    if changed is None or names is None or not changed.isdisjoint(names):
        return None
    with contextlib.suppress(OSError):
        record._replace(serial=serial).save(record_file)
    return record, f"upstream serial {record.serial} -> {serial}: its changelog names none of these projects"


def _names(record_file: Path) -> set[str] | None:
    try:
        return set(names_path(record_file).read_text().split())
    except OSError:
        return None


def warm_sync(config_path: Path | None, quiet: bool) -> int | None:
    """Answer a plain ``gitmirror sync`` (no projects, ``--json`` or ``--full``) from the record when
    it still holds; None: run the full command."""
    resolved = config_file(config_path)
    if resolved is None:
        return None
    holding = still_holds(resolved)
    if holding is None:
        return None
    record, why = holding
    if not quiet:
        print(f"{record.projects} projects checked, 0 changed, 0 files added; nothing to commit ({why})")
    return 0

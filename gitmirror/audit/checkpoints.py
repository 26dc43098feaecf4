"""Checking a published checkpoint against a clone, remembering what was seen, and witnessing.

A checkpoint (``model.signed_note.Checkpoint``) is accepted when the mirror's key signed it (one
Ed25519 key of an allowed_signers file, signing under the checkpoint's origin), enough witnesses
cosigned it (C2SP ``cosignature/v1``, ``model.cosignature``, dated no later than now), the clone
holds its commit as the ``size``-th of that commit's first-parent line, and it extends the last
checkpoint of the same origin seen before: that one's commit sits at its size on the new commit's
first-parent line. Each accepted checkpoint is remembered (``SeenCheckpoints``), so a mirror that
shows one client two histories is caught the first time the client sees the second, in any later
run; because each accepted checkpoint extends the one before, checking the last one checks them all.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..model import cosignature, signed_note
from ..model.cosignature import MAX_CLOCK_SKEW
from ..model.signed_note import MAX_NOTE_BYTES, Checkpoint, Note, NoteError
from ..model.ssh_signatures import AllowedSigners
from ..storage.repo import MetadataRepo

STATE_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be accepted, phrased as one line."""


class ForkError(CheckpointError):
    """The mirror's history forked from (or went back behind) a checkpoint seen before: two
    histories, or a history and its past, shown under one name."""


def default_state(kind: str = "checkpoints") -> Path:
    """``$XDG_STATE_HOME/gitmirror/<kind>.json``: the client's own memory, beside no clone or mirror."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gitmirror" / f"{kind}.json"


def read_note(source: str, timeout: float = 30.0) -> bytes:
    """The note at ``source``: an http(s) URL (a mirror's root means its ``/checkpoint``) or a file."""
    if source.startswith(("http://", "https://")):
        from ..model.hosts import HostPolicy
        from ..upstream.transport import FetchError, Transient, Transport

        url = checkpoint_url(source)
        transport = Transport(HostPolicy(url), timeout, peer="mirror")
        try:
            answer = transport.get_page(url, {}, MAX_NOTE_BYTES, what="checkpoint")
        except (FetchError, Transient) as exc:
            raise CheckpointError(f"cannot fetch {url}: {exc}") from None
        finally:
            transport.close()
        if answer.status != 200:
            reason = answer.body.decode(errors="replace").strip()[:200]
            raise CheckpointError(f"{url} answered {answer.status}: {reason}")
        return answer.body
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {source}: {exc.strerror}") from None


def checkpoint_url(source: str) -> str:
    """A mirror's ``/checkpoint`` URL from ``source``: that URL, the mirror's root, or an index of it
    (``http://mirror/simple/``, a snapshot's)."""
    root = source.rstrip("/")
    if root.endswith("checkpoint"):
        return source
    root = root.removesuffix("/simple")
    if "/snapshot/" in root:
        root = root[: root.index("/snapshot/")]
    return root + "/checkpoint"


def submit_cosignature(source: str, note: str, timeout: float = 30.0) -> str:
    """Hand a cosigned ``note`` to the mirror of the checkpoint URL ``source``; its one-line answer.

    Raises ``CheckpointError`` with the mirror's line when it does not keep the cosignature.
    """
    from urllib.parse import urlsplit

    import httpx

    from ..upstream.credentials import NetrcCredentials

    url = checkpoint_url(source).rstrip("/") + "/cosignature"
    headers = {"content-type": "text/plain"}
    login = NetrcCredentials().header(urlsplit(url).hostname or "")  # a private mirror's token, as for reads
    if login is not None:
        headers["authorization"] = login
    try:
        answer = httpx.post(url, content=note.encode(), headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise CheckpointError(f"cannot submit the cosignature to {url}: {exc}") from None
    line = " ".join(answer.text.split())[:200]
    if answer.status_code != 200:
        raise CheckpointError(f"{url} answered {answer.status_code}: {line}")
    return line


@dataclass(frozen=True)
class Seen:
    size: int
    commit: str
    time: int
    note: str


class SeenCheckpoints:
    """The last accepted checkpoint per origin, and every fork found, in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {"version": STATE_VERSION, "origins": {}, "forks": []}
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the checkpoints seen before ({path}): {exc}") from None
        if data.get("version") != STATE_VERSION:
            raise CheckpointError(f"{path}: not a gitmirror checkpoint state of version {STATE_VERSION}")
        self.origins: dict[str, Seen] = {origin: Seen(**seen) for origin, seen in data["origins"].items()}
        self.forks: list[dict[str, str]] = data["forks"]

    def last(self, origin: str) -> Seen | None:
        return self.origins.get(origin)

    def accept(self, checkpoint: Checkpoint, note: Note) -> None:
        self.origins[checkpoint.origin] = Seen(checkpoint.size, checkpoint.commit, checkpoint.time, note.render())
        self._save()

    def record_fork(self, origin: str, seen: Seen, note: Note) -> None:
        """Keep both signed notes: together they prove the mirror signed two histories."""
        self.forks.append({"origin": origin, "seen": seen.note, "new": note.render()})
        self._save()

    def _save(self) -> None:
        data = {
            "version": STATE_VERSION,
            "origins": {origin: asdict(seen) for origin, seen in sorted(self.origins.items())},
            "forks": self.forks,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".checkpoints-", dir=self.path.parent)
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            raise CheckpointError(f"cannot write the checkpoints seen ({self.path}): {exc.strerror}") from None


@dataclass(frozen=True)
class Accepted:
    checkpoint: Checkpoint
    note: Note
    witnesses: tuple[str, ...]


def open_checkpoint(
    data: bytes, mirror_keys: AllowedSigners, witness_keys: AllowedSigners | None = None, min_witnesses: int = 0
) -> tuple[Checkpoint, Note, tuple[str, ...]]:
    """The checkpoint in ``data`` once the mirror's signature and ``min_witnesses`` cosignatures hold."""
    try:
        note = signed_note.parse(data)
        checkpoint = signed_note.parse_checkpoint(note.text)
    except NoteError as exc:
        raise CheckpointError(str(exc)) from None
    if not any(signed_note.verified_by(note, checkpoint.origin, key) for _, key in mirror_keys.ed25519_keys()):
        raise CheckpointError(f"checkpoint of {checkpoint.origin} is not signed by a key of {mirror_keys.source}")
    keys = witness_keys.ed25519_keys() if witness_keys else []
    witnesses = tuple(sorted(cosignature.witnessed(note, keys, int(time.time()) + MAX_CLOCK_SKEW, checkpoint.origin)))
    if len(witnesses) < min_witnesses:
        source = witness_keys.source if witness_keys else "no witness keys"
        raise CheckpointError(
            f"checkpoint of {checkpoint.origin} has {len(witnesses)} valid cosignature(s) from {source}, "
            f"{min_witnesses} required"
        )
    return checkpoint, note, witnesses


def accept(
    repo: MetadataRepo,
    data: bytes,
    mirror_keys: AllowedSigners,
    seen: SeenCheckpoints,
    witness_keys: AllowedSigners | None = None,
    min_witnesses: int = 0,
) -> Accepted:
    """Check a checkpoint against ``repo`` and the last one seen; remember it once it holds.

    Raises ``ForkError`` (after recording both notes) when it does not extend the last one seen.
    """
    checkpoint, note, witnesses = open_checkpoint(data, mirror_keys, witness_keys, min_witnesses)
    commit = checkpoint.commit.encode()
    if not repo.has_object(commit):
        raise CheckpointError(
            f"the clone does not contain the published tip {checkpoint.commit[:12]} of {checkpoint.origin} "
            "(git fetch first)"
        )
    line = [c.id for c in repo.first_parents(commit)]
    if len(line) != checkpoint.size:
        raise CheckpointError(
            f"checkpoint of {checkpoint.origin} says {checkpoint.size} commits up to {checkpoint.commit[:12]}, "
            f"the clone's first-parent line holds {len(line)}"
        )
    before = seen.last(checkpoint.origin)
    if before is not None:
        problem = _extension_problem(line, before)
        if problem is not None:
            seen.record_fork(checkpoint.origin, before, note)
            kind = "ROLLBACK" if problem == "goes back behind" else "FORK"
            raise ForkError(
                f"{kind}: {checkpoint.origin}'s checkpoint (size {checkpoint.size}, commit {checkpoint.commit[:12]}) "
                f"{problem} the one seen before (size {before.size}, commit {before.commit[:12]}); both signed "
                f"notes are kept in {seen.path}"
            )
    seen.accept(checkpoint, note)
    return Accepted(checkpoint, note, witnesses)


def cosign(accepted: Accepted, name: str, private_key: Ed25519PrivateKey) -> Note:
    """The accepted note with the witness ``name``'s ``cosignature/v1``, dated now, added."""
    return accepted.note.with_signature(cosignature.cosign(accepted.note.text, name, private_key, int(time.time())))


def _extension_problem(line: Sequence[bytes], before: Seen) -> str | None:
    """Why the first-parent ``line`` (tip first) does not extend ``before``, or None."""
    if before.size > len(line):
        return "goes back behind"
    if line[len(line) - before.size].decode() != before.commit:
        return "does not extend"
    return None

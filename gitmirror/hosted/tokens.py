"""API tokens: who may upload (and read, with ``read_auth``), stored as salted hashes only.

A token is ``gitmirror-`` and 43 characters of ``secrets.token_urlsafe`` (256 random bits); it is
shown once, when created. The mirror keeps, per token name, a random salt and ``sha256(salt +
token)``: 256 random bits need no slow hash to resist guessing, and a check costs microseconds,
which matters when every read is authenticated. The file lives in the metadata repository's
directory (``gitmirror-tokens.json``, mode 0600), beside git's own files and never in its history:
a clone or a push never carries it. A revoked token's name stays taken, so the uploader a commit
names (``uploaded-by:``) always means one token.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..model.manifest import now

TOKENS_FILE = "gitmirror-tokens.json"
TOKEN_PREFIX = "gitmirror-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch
_FORMAT = 1


class TokenError(ValueError):
    """A token command that cannot be done, as the one line the user sees."""


@dataclass(frozen=True)
class TokenRecord:
    name: str
    salt: str  # hex
    sha256: str  # of salt + token
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str, salt: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()


def record_for(name: str, token: str) -> TokenRecord:
    """A new record of ``token`` under ``name``, with a fresh salt."""
    salt = secrets.token_hex(16)
    return TokenRecord(name=check_name(name), salt=salt, sha256=token_digest(token, salt), created=now())


def matching(records: dict[str, TokenRecord], token: str) -> str | None:
    """The name of the active token ``token`` is, or None (unknown, wrong or revoked)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    found = None
    for record in records.values():  # every record is compared: the time taken says nothing
        if hmac.compare_digest(token_digest(token, record.salt), record.sha256) and record.active:
            found = record.name
    return found


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise TokenError(f"invalid token name {name!r} (letters, digits, '.', '_', '-'; at most 64)")
    return name


class TokenStore:
    """The token file of one repository; re-read whenever it changed (a revoke takes effect at once)."""

    def __init__(self, repo_path: Path) -> None:
        self.path = Path(repo_path) / TOKENS_FILE
        self._loaded: tuple[object, dict[str, TokenRecord]] | None = None

    def records(self) -> dict[str, TokenRecord]:
        try:
            status = os.stat(self.path)
            stamp: object = (status.st_ino, status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            return {}
        if self._loaded is None or self._loaded[0] != stamp:
            self._loaded = (stamp, _parse(self.path.read_bytes(), self.path))
        return self._loaded[1]

    def check(self, token: str) -> str | None:
        """The name of the active token ``token`` is, or None."""
        return matching(self.records(), token)

    def create(self, name: str) -> str:
        """A new token named ``name``; returns it (the only time it is known)."""
        check_name(name)
        token = new_token()
        with self._locked() as records:
            if name in records:
                state = "revoked; names are never reused" if records[name].revoked else "exists"
                raise TokenError(f"a token named {name} {state}")
            records[name] = record_for(name, token)
            self._write(records)
        return token

    def revoke(self, name: str) -> TokenRecord:
        with self._locked() as records:
            record = records.get(name)
            if record is None:
                raise TokenError(f"no token named {name}")
            if record.revoked:
                return record
            records[name] = replace(record, revoked=now())
            self._write(records)
            return records[name]

    def check_repository(self) -> None:
        """``TokenError`` when the repository the tokens belong to is not there."""
        if not self.path.parent.is_dir():
            raise TokenError(f"no repository at {self.path.parent} (run `gitmirror init`)")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, TokenRecord]]:
        self.check_repository()
        with open(self.path.with_name(TOKENS_FILE + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield dict(_parse(self.path.read_bytes(), self.path)) if self.path.exists() else {}
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, records: dict[str, TokenRecord]) -> None:
        """Replace the file atomically, readable by its owner only, on disk before it is named."""
        data = {"gitmirror-tokens": _FORMAT, "tokens": [asdict(record) for record in records.values()]}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=1)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _parse(data: bytes, path: Path) -> dict[str, TokenRecord]:
    try:
        document = json.loads(data)
        if document.get("gitmirror-tokens") != _FORMAT:
            raise ValueError("unknown format")
        records = [_checked(TokenRecord(**item)) for item in document["tokens"]]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TokenError(f"{path}: not a gitmirror token file ({exc})") from None
    return {record.name: record for record in records}


def _checked(record: TokenRecord) -> TokenRecord:
    """``record`` when every field has its type (the hashes hex): a hand-edited file fails here, once."""
    strings = (record.name, record.salt, record.sha256, record.created)
    if not all(isinstance(value, str) for value in strings) or not isinstance(record.revoked, str | None):
        raise TypeError(f"token {record.name!r}: a field of the wrong type")
    for digest in (record.salt, record.sha256):
        bytes.fromhex(digest)  # ValueError: not hex
    return record

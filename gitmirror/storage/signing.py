"""Signing what the mirror writes: every commit and tag, with the mirror's SSH key, as git does.

The settings live in the repository's own git config under git's own names (``gpg.format = ssh``,
``user.signingKey``, ``commit.gpgSign``, ``tag.gpgSign``), so ``git commit`` in the repository signs
with the same key and every writer of the mirror signs without being told: ``Writer.write_durably``,
the one door objects go through, signs each unsigned commit and tag (``sign_objects``). A commit
carries the signature in its ``gpgsig`` header, a tag after its message, each an
``ssh-keygen -Y sign -n git`` signature over the object without it (dulwich's SSH vendor runs
ssh-keygen), which ``git verify-commit`` and ``git verify-tag`` check.

The pre-receive hook reads ``gpg.ssh.allowedSignersFile`` and ``gitmirror.requireSignedMain``
from the same config (``signing_policy``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dulwich.config import ConfigFile
from dulwich.objects import Commit, ShaFile, Tag

from .history import RepoError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_SIGNING_KEY = (b"user",), b"signingKey"
_FORMAT = (b"gpg",), b"format"
_SIGN_COMMITS = (b"commit",), b"gpgSign"
_SIGN_TAGS = (b"tag",), b"gpgSign"
_ALLOWED_SIGNERS = (b"gpg", b"ssh"), b"allowedSignersFile"
_REQUIRE_SIGNED_MAIN = (b"gitmirror",), b"requireSignedMain"


class SigningError(RepoError):
    """The mirror's key cannot sign (missing, unreadable, not an SSH key): nothing is written."""


@dataclass(frozen=True)
class SigningPolicy:
    """What the repository's config asks for: the key it signs with, the keys pushes must carry."""

    key: Path | None = None
    allowed_signers: Path | None = None
    require_signed_main: bool = False


def signing_policy(config: ConfigFile) -> SigningPolicy:
    key = _get(config, _SIGNING_KEY) if _get(config, _SIGN_COMMITS) in ("true", "yes", "on", "1") else None
    if key is not None and _get(config, _FORMAT) != "ssh":
        raise SigningError("commit.gpgSign is set but gpg.format is not ssh: gitmirror signs with SSH keys only")
    allowed = _get(config, _ALLOWED_SIGNERS)
    return SigningPolicy(
        key=Path(key).expanduser() if key else None,
        allowed_signers=Path(allowed).expanduser() if allowed else None,
        require_signed_main=_get(config, _REQUIRE_SIGNED_MAIN) in ("true", "yes", "on", "1"),
    )


def signing_settings(
    key: Path | None, allowed_signers: Path | None = None, require_signed_main: bool = False
) -> list[tuple[tuple[tuple[bytes, ...], bytes], bytes]]:
    """The git config entries that make the repository sign with ``key`` and, with
    ``require_signed_main``, refuse pushes to main not signed by a key of ``allowed_signers``."""
    settings: list[tuple[tuple[tuple[bytes, ...], bytes], bytes]] = []
    if key is not None:
        check_key(key)
        settings += [(_FORMAT, b"ssh"), (_SIGNING_KEY, str(key.resolve()).encode())]
        settings += [(_SIGN_COMMITS, b"true"), (_SIGN_TAGS, b"true")]
    if allowed_signers is not None:
        if not allowed_signers.is_file():
            raise SigningError(f"allowed signers file {allowed_signers} does not exist")
        settings.append((_ALLOWED_SIGNERS, str(allowed_signers.resolve()).encode()))
    if require_signed_main:
        if allowed_signers is None:
            raise SigningError("requiring signed pushes to main needs an allowed signers file")
        settings.append((_REQUIRE_SIGNED_MAIN, b"true"))
    return settings


def check_key(key: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in an unencrypted OpenSSH key file, or one line saying why not."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    try:
        data = key.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read signing key {key}: {exc.strerror}") from None
    try:
        private_key = load_ssh_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{key} is not an unencrypted OpenSSH private key ({exc})") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise SigningError(f"{key} is not an Ed25519 key (create one with ssh-keygen -t ed25519)")
    return private_key


def sign_objects(policy: SigningPolicy, objects: Iterable[ShaFile]) -> None:
    """Sign, in place, every commit and tag of ``objects`` not signed yet (their ids change)."""
    if policy.key is None:
        return
    for obj in objects:
        if isinstance(obj, Commit) and obj.gpgsig is None:
            obj.gpgsig = _ssh_sign(obj.raw_without_sig(), policy.key)
        elif isinstance(obj, Tag) and obj.signature is None:
            obj.signature = _ssh_sign(obj.raw_without_sig(), policy.key)


def signed_payload(obj: ShaFile) -> tuple[bytes, bytes | None, int]:
    """(what was signed, the armored signature or None, the object's own time) of a commit or tag."""
    if isinstance(obj, Commit):
        return obj.raw_without_sig(), obj.gpgsig, obj.commit_time
    if isinstance(obj, Tag):
        return obj.raw_without_sig(), obj.signature, obj.tag_time or 0
    raise RepoError(f"{obj.id.decode()} is neither a commit nor a tag")


def _ssh_sign(payload: bytes, key: Path) -> bytes:
    from dulwich.signature import SSHCliSignatureVendor

    try:
        return SSHCliSignatureVendor().sign(payload, keyid=str(key))
    except subprocess.CalledProcessError as exc:
        reason = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise SigningError(f"ssh-keygen could not sign with {key}: {reason[-1] if reason else exc}") from None
    except FileNotFoundError:
        raise SigningError("ssh-keygen is not installed: signing needs OpenSSH's ssh-keygen") from None


def _get(config: ConfigFile, key: tuple[tuple[bytes, ...], bytes]) -> str | None:
    try:
        value = config.get(*key)
    except KeyError:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)

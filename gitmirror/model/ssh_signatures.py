"""Who may sign the mirror's history: an OpenSSH ``allowed_signers`` file, and the check of one signature.

The file is the one ``git`` reads (``gpg.ssh.allowedSignersFile``): one key per line,
``<principals> [options] <key type> <base64 key> [comment]``. The options honoured are git's:
``namespaces`` (must include ``git``) and ``valid-after``/``valid-before`` (judged at the signed
object's own time, as git does; times without ``Z`` are read as UTC); a ``cert-authority`` line
signs nothing here. The signature is an SSHSIG (``ssh-keygen -Y sign -n git``) over the object
without its signature, checked in-process by the ``sshsig`` package: a history of thousands of
commits is checked without a process per commit.

Pure: the file's text comes in, verdicts go out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from sshsig import InvalidSignature, PublicKey, check_signature
from sshsig.allowed_signers import AllowedSigner

NAMESPACE = "git"


class AllowedSignersError(ValueError):
    """An allowed_signers file that cannot be read, phrased as one line."""


@dataclass(frozen=True)
class Verdict:
    """One signature's verdict: ``principal`` set when an allowed key signed; else ``problem``."""

    principal: str | None = None
    problem: str | None = None
    fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        return self.principal is not None


@dataclass(frozen=True)
class _Entry:
    principals: str
    key: PublicKey
    namespaces: tuple[str, ...] | None
    valid_after: int | None
    valid_before: int | None
    cert_authority: bool


class AllowedSigners:
    """The keys of one allowed_signers file."""

    def __init__(self, entries: list[_Entry], source: str = "allowed_signers") -> None:
        self.entries = entries
        self.source = source

    @classmethod
    def parse(cls, text: str, source: str = "allowed_signers") -> AllowedSigners:
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                signer = AllowedSigner.parse(line)
                key = PublicKey.from_openssh_str(f"{signer.key_type} {signer.base64_key}")
            except (ValueError, NotImplementedError) as exc:
                raise AllowedSignersError(f"{source}:{number}: not an allowed_signers line ({exc})") from None
            options = signer.options or {}
            namespaces = options.get("namespaces")
            entries.append(
                _Entry(
                    signer.principals,
                    key,
                    tuple(namespaces.split(",")) if namespaces is not None else None,
                    _timestamp(options.get("valid-after"), source, number),
                    _timestamp(options.get("valid-before"), source, number),
                    "cert-authority" in options,
                )
            )
        return cls(entries, source)

    def check(self, payload: bytes, armored: bytes | None, when: int) -> Verdict:
        """Whether ``armored`` is a valid git-namespace SSH signature of ``payload`` by a key allowed at ``when``."""
        if armored is None:
            return Verdict(problem="not signed")
        try:
            key = check_signature(payload, armored, NAMESPACE)
        except InvalidSignature:
            return Verdict(problem="bad signature (the signed content or the signature was altered)")
        except (ValueError, NotImplementedError) as exc:
            return Verdict(problem=f"unreadable signature ({exc})")
        fingerprint = key.sha256_str()
        for entry in self.entries:
            if entry.key != key or entry.cert_authority:
                continue
            if entry.namespaces is not None and NAMESPACE not in entry.namespaces:
                continue
            if (entry.valid_after is not None and when < entry.valid_after) or (
                entry.valid_before is not None and when >= entry.valid_before
            ):
                return Verdict(problem=f"signed by {fingerprint} outside its validity in {self.source}")
            return Verdict(principal=entry.principals, fingerprint=fingerprint)
        return Verdict(problem=f"signed by {fingerprint}, a key not in {self.source}", fingerprint=fingerprint)

    def ed25519_keys(self) -> list[tuple[str, Ed25519PublicKey]]:
        """(principals, key) of every Ed25519 key: the keys signed notes (checkpoints) can be checked with."""
        found = []
        for entry in self.entries:
            key = load_ssh_public_key(entry.key.openssh_str().encode())
            if isinstance(key, Ed25519PublicKey):
                found.append((entry.principals, key))
        return found


def _timestamp(value: str | None, source: str, number: int) -> int | None:
    """git's ``YYYYMMDD[HHMM[SS]][Z]`` as Unix seconds."""
    if value is None:
        return None
    digits = value.removesuffix("Z")
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    try:
        return int(datetime.strptime(digits, formats[len(digits)]).replace(tzinfo=UTC).timestamp())
    except (KeyError, ValueError):
        raise AllowedSignersError(f"{source}:{number}: unreadable time {value!r}") from None

"""Signed notes (C2SP signed-note, the Go checksum database's format) and the mirror's checkpoint.

A note is UTF-8 text ending in a newline, a blank line, then one line per signature::

    <text>

    — <name> <base64(key id || signature)>

The key id is the first 4 bytes of SHA-256(name || 0x0A || 0x01 || Ed25519 public key); the
signature is Ed25519 over the text (its final newline included, the blank line not). A verifier
key is written ``<name>+<key id hex>+<base64(0x01 || public key)>``, as Go's ``note`` package does,
so any implementation of the format checks gitmirror's notes.

The checkpoint is the note text the mirror signs (C2SP tlog-checkpoint's shape): the origin, the
number of commits on the branch's first-parent line, the tip's commit id in base64, then two
extension lines, the commit id in hex and the tip's commit time. The commit id stands where a log
has its Merkle root: a git commit id already commits to the whole history before it.

Pure: no I/O; keys are ``cryptography`` Ed25519 keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
SIGNATURE_PREFIX = "— "  # U+2014 EM DASH, then a space
MAX_SIGNATURES = 100
#: a note is a few lines and at most ``MAX_SIGNATURES`` signature lines
MAX_NOTE_BYTES = 64 * 1024
_NAME = re.compile(r"[^\s+]+")
_HEX_ID = re.compile(r"[0-9a-f]{40}")


class NoteError(ValueError):
    """A note, key or checkpoint that does not follow the format, phrased as one line."""


@dataclass(frozen=True)
class Signature:
    """One signature line: who signed, the 4-byte key id, the 64-byte Ed25519 signature."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...] = ()

    def render(self) -> str:
        return self.text + "\n" + "".join(signature.line() for signature in self.signatures)

    def with_signature(self, signature: Signature) -> Note:
        """This note with ``signature`` added, replacing one by the same name and key id."""
        kept = tuple(s for s in self.signatures if (s.name, s.key_id) != (signature.name, signature.key_id))
        return Note(self.text, kept + (signature,))


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise NoteError(f"invalid key name {name!r}: it must be non-empty, without spaces or '+'")
    return name


def key_id(name: str, public_key: Ed25519PublicKey, algorithm: int = ALG_ED25519) -> bytes:
    """SHA-256(name || 0x0A || algorithm || public key)[:4]: the algorithm byte keeps a key's note
    signatures and its cosignatures apart."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(check_name(name).encode() + b"\n" + bytes([algorithm]) + raw).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The ``<name>+<hex id>+<base64>`` string Go's ``note.NewVerifier`` reads."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"{name}+{key_id(name, public_key).hex()}+{base64.b64encode(bytes([ALG_ED25519]) + raw).decode()}"


def parse_verifier_key(text: str) -> tuple[str, Ed25519PublicKey]:
    """(name, public key) of a ``<name>+<hex id>+<base64>`` verifier key; its id must match."""
    name, _, rest = text.strip().partition("+")
    hex_id, _, encoded = rest.partition("+")
    raw = _b64(encoded, "verifier key")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise NoteError("verifier key: not an Ed25519 key (algorithm 1, 32 bytes)")
    public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_id(name, public_key).hex() != hex_id:
        raise NoteError(f"verifier key: key id {hex_id!r} does not match the name and key")
    return name, public_key


def parse_signer_key(text: str) -> tuple[str, Ed25519PrivateKey]:
    """(name, private key) of Go's ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>``."""
    prefix, _, rest = text.strip().partition("+KEY+")
    name, _, rest = rest.partition("+")
    hex_id, _, encoded = rest.partition("+")
    raw = _b64(encoded, "signer key")
    if prefix != "PRIVATE" or len(raw) != 33 or raw[0] != ALG_ED25519:
        raise NoteError("signer key: not PRIVATE+KEY+<name>+<id>+<Ed25519 seed>")
    private_key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    if key_id(name, private_key.public_key()).hex() != hex_id:
        raise NoteError(f"signer key: key id {hex_id!r} does not match the name and key")
    return name, private_key


def sign(text: str, name: str, private_key: Ed25519PrivateKey) -> Signature:
    """``name``'s signature of ``text`` (deterministic: Ed25519 signs the same text the same way)."""
    _check_text(text)
    return Signature(name, key_id(name, private_key.public_key()), private_key.sign(text.encode()))


def parse(data: str | bytes) -> Note:
    """A note's text and signatures; the signatures are not checked here (``verified_by`` does)."""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError as exc:
            raise NoteError("note: not UTF-8") from exc
    split = data.rfind("\n\n")
    if split < 0 or not data.endswith("\n"):
        raise NoteError("note: no blank line before the signatures, or no final newline")
    text, block = data[: split + 1], data[split + 2 :]
    _check_text(text)
    signatures = []
    for line in block.splitlines():
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"note: malformed signature line {line[:80]!r}")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        raw = _b64(encoded, "signature")
        if len(raw) < 5 or " " in encoded:
            raise NoteError(f"note: malformed signature line {line[:80]!r}")
        signatures.append(Signature(check_name(name), raw[:4], raw[4:]))
    if not signatures:
        raise NoteError("note: no signature")
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError(f"note: more than {MAX_SIGNATURES} signatures")
    return Note(text, tuple(signatures))


def verified_by(note: Note, name: str, public_key: Ed25519PublicKey) -> bool:
    """Whether ``note`` carries a valid signature by ``name`` with ``public_key``."""
    wanted = key_id(name, public_key)
    for signature in note.signatures:
        if signature.name == name and signature.key_id == wanted:
            try:
                public_key.verify(signature.signature, note.text.encode())
                return True
            except InvalidSignature:
                return False
    return False


@dataclass(frozen=True)
class Checkpoint:
    """The mirror's signed statement: ``origin``'s branch stood at ``commit``, the ``size``-th commit
    of its first-parent line, committed at ``time`` (Unix seconds)."""

    origin: str
    size: int
    commit: str
    time: int

    def text(self) -> str:
        digest = base64.b64encode(bytes.fromhex(self.commit)).decode()
        return f"{self.origin}\n{self.size}\n{digest}\ncommit {self.commit}\ntime {self.time}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) != 6 or lines[-1] != "":
        raise NoteError("checkpoint: expected origin, size, hash, commit and time lines")
    origin, size, digest, commit_line, time_line = lines[:5]
    commit = commit_line.removeprefix("commit ")
    if not (_HEX_ID.fullmatch(commit) and size.isdigit() and time_line.startswith("time ")):
        raise NoteError("checkpoint: malformed size, commit or time line")
    if _b64(digest, "checkpoint hash") != bytes.fromhex(commit):
        raise NoteError("checkpoint: the hash line and the commit line disagree")
    when = time_line.removeprefix("time ")
    if not when.isdigit():
        raise NoteError("checkpoint: malformed time line")
    return Checkpoint(check_name(origin), int(size), commit, int(when))


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must be non-empty and end in a newline")


def _b64(encoded: str, what: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what}: not base64") from exc

"""Witness cosignatures of a checkpoint: C2SP tlog-cosignature, ``cosignature/v1`` with Ed25519.

A cosignature is a signed-note signature line whose key id is computed with algorithm byte 0x04
(SHA-256(name || 0x0A || 0x04 || public key)[:4]) and whose value is the key id, the time of
cosigning as 8 bytes big-endian (Unix seconds), then the Ed25519 signature of::

    cosignature/v1
    time <Unix seconds>
    <the checkpoint's note text, its final newline included>

The time line makes a cosignature a dated statement ("as of then, this was the latest state I saw"),
and the distinct header and algorithm byte keep it from ever passing as a plain note signature, so
any witness or verifier of the C2SP ecosystem reads gitmirror's cosignatures and the other way round.

Pure: no I/O and no clock; the caller passes the time.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .signed_note import Note, NoteError, Signature, key_id

ALG_COSIGNATURE_V1 = 0x04
HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1
#: a cosignature dated later than now plus this (seconds of clock skew) does not count
MAX_CLOCK_SKEW = 300
_TIMESTAMP_BYTES = 8
_ED25519_SIGNATURE_BYTES = 64


def cosigner_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    return key_id(name, public_key, ALG_COSIGNATURE_V1)


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The witness's ``<name>+<hex id>+<base64(0x04 || public key)>`` vkey, as C2SP witnesses publish it."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    encoded = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + raw).decode()
    return f"{name}+{cosigner_key_id(name, public_key).hex()}+{encoded}"


def witnessed(
    note: Note, keys: Iterable[tuple[str, Ed25519PublicKey]], latest: int, origin: str
) -> dict[str, Signature]:
    """The valid cosignatures of ``note`` by ``keys`` (comma-separated principals, each a witness
    name, as an allowed_signers file lists them), dated no later than ``latest``, by witness name;
    the note's ``origin`` is never its own witness."""
    found: dict[str, Signature] = {}
    for principals, public_key in keys:
        for name in principals.split(","):
            if name == origin or name in found:
                continue
            when = cosigned_at(note, name, public_key)
            if when is not None and when <= latest:
                wanted = cosigner_key_id(name, public_key)
                found[name] = next(s for s in note.signatures if s.name == name and s.key_id == wanted)
    return found


def signed_message(text: str, timestamp: int) -> bytes:
    """The bytes a witness signs: the header line, the time line, then the checkpoint's note text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature: timestamp {timestamp} is outside 0..2^63-1")
    if not text.endswith("\n"):
        raise NoteError("note text must be non-empty and end in a newline")
    return f"{HEADER}time {timestamp}\n{text}".encode()


def cosign(text: str, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> Signature:
    """``name``'s cosignature of the note ``text`` at ``timestamp`` (Unix seconds)."""
    signature = private_key.sign(signed_message(text, timestamp))
    stamp = timestamp.to_bytes(_TIMESTAMP_BYTES, "big")
    return Signature(name, cosigner_key_id(name, private_key.public_key()), stamp + signature)


def cosigned_at(note: Note, name: str, public_key: Ed25519PublicKey) -> int | None:
    """The time of ``name``'s valid cosignature of ``note`` with ``public_key``, or None if it has none."""
    wanted = cosigner_key_id(name, public_key)
    for line in note.signatures:
        if line.name != name or line.key_id != wanted:
            continue
        if len(line.signature) != _TIMESTAMP_BYTES + _ED25519_SIGNATURE_BYTES:
            return None
        timestamp = int.from_bytes(line.signature[:_TIMESTAMP_BYTES], "big")
        if timestamp > MAX_TIMESTAMP:
            return None
        try:
            public_key.verify(line.signature[_TIMESTAMP_BYTES:], signed_message(note.text, timestamp))
        except InvalidSignature:
            return None
        return timestamp
    return None

"""The mirror's checkpoint: a signed note stating where its branch stands (``model.signed_note``).

The text is a function of the tip alone (origin, first-parent line length, commit id, commit
time), and Ed25519 signs deterministically, so every request for one tip gets the same bytes and
witnesses cosign exactly what clients fetch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..model import signed_note
from ..model.signed_note import Checkpoint, Note, NoteError
from .repo import MetadataRepo
from .snapshot import first_parent_line


def default_origin(public_key: Ed25519PublicKey) -> str:
    """The checkpoint name when ``signing.name`` is unset: derived from the key, so it never collides."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"gitmirror-{hashlib.sha256(raw).hexdigest()[:16]}"


def checkpoint_at(repo: MetadataRepo, branch: str, origin: str, tip: bytes) -> Checkpoint:
    """The checkpoint of ``branch`` standing at ``tip``."""
    size = first_parent_line(repo, branch).length(tip)
    return Checkpoint(origin, size, tip.decode(), repo.commit(tip).commit_time)


def signed_checkpoint(checkpoint: Checkpoint, private_key: Ed25519PrivateKey, cosigned: Path | None = None) -> Note:
    """``checkpoint`` signed by the mirror, with the witnesses' cosignatures of the same text found
    in ``cosigned`` (a directory of notes, ``*.note``) beside it; unreadable notes there are skipped."""
    text = checkpoint.text()
    note = Note(text, (signed_note.sign(text, checkpoint.origin, private_key),))
    for path in sorted(cosigned.glob("*.note")) if cosigned is not None and cosigned.is_dir() else ():
        try:
            other = signed_note.parse(path.read_bytes())
        except (OSError, NoteError):
            continue
        if other.text == text:
            for signature in other.signatures:
                if signature.name != checkpoint.origin:
                    note = note.with_signature(signature)
    return note

"""The signed-note format against the Go reference implementation's published example, and the checkpoint."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gitmirror.model import signed_note
from gitmirror.model.signed_note import Checkpoint, NoteError

# golang.org/x/mod/sumdb/note: the key, text and signed note of its package documentation and tests
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_signing_the_go_example_reproduces_its_note_byte_for_byte():
    name, private_key = signed_note.parse_signer_key(GO_SIGNER_KEY)
    note = signed_note.Note(GO_TEXT, (signed_note.sign(GO_TEXT, name, private_key),))
    assert note.render() == GO_NOTE
    assert signed_note.verifier_key(name, private_key.public_key()) == GO_VERIFIER_KEY


def test_the_go_note_verifies_with_the_go_verifier_key_and_not_once_altered():
    name, public_key = signed_note.parse_verifier_key(GO_VERIFIER_KEY)
    note = signed_note.parse(GO_NOTE)
    assert note.text == GO_TEXT and signed_note.verified_by(note, name, public_key)
    altered = signed_note.parse(GO_NOTE.replace("answer", "Answer"))
    assert not signed_note.verified_by(altered, name, public_key)
    assert not signed_note.verified_by(note, "Someone", public_key)


@pytest.mark.parametrize(
    "bad",
    [
        GO_TEXT,  # no signatures
        GO_NOTE.rstrip("\n"),  # no final newline
        GO_NOTE.replace("— ", "- "),  # not an em dash
        GO_NOTE.replace("x08go/", "x08go!"),  # not base64
        GO_TEXT + "\n— PeterNeumann AAAA\n",  # too short for a key id and a signature
    ],
)
def test_malformed_notes_are_refused_in_one_line(bad):
    with pytest.raises(NoteError):
        signed_note.parse(bad)


def test_a_verifier_key_with_a_wrong_key_id_is_refused():
    with pytest.raises(NoteError, match="key id"):
        signed_note.parse_verifier_key(GO_VERIFIER_KEY.replace("c74f20a3", "c74f20a4"))


def test_a_checkpoint_round_trips_and_a_cosignature_is_added_beside_the_mirror_signature():
    checkpoint = Checkpoint("mirror.example/simple", 42, "0123456789abcdef0123456789abcdef01234567", 1700000000)
    text = checkpoint.text()
    assert text.splitlines()[:2] == ["mirror.example/simple", "42"]
    assert signed_note.parse_checkpoint(text) == checkpoint
    mirror, witness = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    note = signed_note.Note(text, (signed_note.sign(text, checkpoint.origin, mirror),))
    cosigned = signed_note.parse(note.with_signature(signed_note.sign(text, "witness.example", witness)).render())
    assert signed_note.verified_by(cosigned, checkpoint.origin, mirror.public_key())
    assert signed_note.verified_by(cosigned, "witness.example", witness.public_key())
    with pytest.raises(NoteError):
        signed_note.parse_checkpoint(text.replace("42", "4x"))

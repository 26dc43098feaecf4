"""C2SP tlog-cosignature (``cosignature/v1``, Ed25519): a known answer computed by hand from a fixed
key, the spec's own example line, and the round trip through a note.

The spec's example does not publish its witness's public key, and no implementation found publishes
a cosignature vector with its key, so the known answer is the RFC 8032 test key cosigning the
spec's example checkpoint at the spec's example time, each byte derived here from the spec's text."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gitmirror.model import cosignature, signed_note
from gitmirror.model.signed_note import NoteError

# RFC 8032 section 7.1, TEST 1: a fixed Ed25519 seed and its public key
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_EMPTY_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# The checkpoint, witness name and time of the example in c2sp.org/tlog-cosignature
SPEC_TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_WITNESS = "witness.example.com/w1"
SPEC_TIME = 1679315147
SPEC_LINE = (
    "— witness.example.com/w1 "
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
# What the RFC 8032 key cosigning the spec's checkpoint at the spec's time must give (Ed25519 is deterministic)
KNOWN_LINE = (
    "— witness.example.com/w1 "
    "fm9KqgAAAABkGFDL+TPmh4BYuAjsYRoqMJCWb/gWJaeRF/kmm5tlCr9sJ57DLErur7K0yDXc2ArN+TIuotuB/HbuL3AJsp3bv/aNCQ==\n"
)
KNOWN_VKEY = "witness.example.com/w1+7e6f4aaa+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"


def test_a_fixed_key_gives_the_hand_computed_cosignature_line():
    key = Ed25519PrivateKey.from_private_bytes(RFC8032_SEED)
    assert key.sign(b"") == RFC8032_EMPTY_SIGNATURE  # the RFC's own answer: the key is the RFC's key
    line = cosignature.cosign(SPEC_TEXT, SPEC_WITNESS, key, SPEC_TIME).line()
    assert line == KNOWN_LINE
    assert cosignature.verifier_key(SPEC_WITNESS, key.public_key()) == KNOWN_VKEY
    # Each part of the line, computed here from the spec's definitions alone:
    raw = base64.b64decode(line.split(" ")[-1])
    assert raw[:4] == hashlib.sha256(SPEC_WITNESS.encode() + b"\n\x04" + RFC8032_PUBLIC).digest()[:4]
    assert raw[4:12] == SPEC_TIME.to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\n" + SPEC_TEXT.encode()
    assert raw[12:] == key.sign(message)
    # ... and not a plain signed-note signature (algorithm 0x01, the text alone).
    assert raw[:4] != signed_note.key_id(SPEC_WITNESS, key.public_key())


def test_the_spec_example_line_carries_the_time_of_its_signed_message():
    note = signed_note.parse(SPEC_TEXT + "\n" + SPEC_LINE)
    (line,) = note.signatures
    assert (line.name, len(line.signature)) == (SPEC_WITNESS, 8 + 64)
    assert int.from_bytes(line.signature[:8], "big") == SPEC_TIME


def test_a_cosignature_verifies_beside_the_mirror_signature_and_not_once_altered():
    mirror, witness = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    origin = "mirror.test/simple"
    text = f"{origin}\n3\nASNFZ4mrze8BI0VniavN7wEjRWc=\n"
    note = signed_note.Note(text, (signed_note.sign(text, origin, mirror),))
    cosigned = signed_note.parse(note.with_signature(cosignature.cosign(text, "w.test", witness, 1700000000)).render())
    assert signed_note.verified_by(cosigned, origin, mirror.public_key())
    assert cosignature.cosigned_at(cosigned, "w.test", witness.public_key()) == 1700000000
    # a cosignature is no note signature, nor a cosignature by another name or key
    assert not signed_note.verified_by(cosigned, "w.test", witness.public_key())
    assert cosignature.cosigned_at(cosigned, "other.test", witness.public_key()) is None
    assert cosignature.cosigned_at(cosigned, "w.test", mirror.public_key()) is None
    # a plain note signature by the witness does not pass as a cosignature
    plain = note.with_signature(signed_note.sign(text, "w.test", witness))
    assert cosignature.cosigned_at(plain, "w.test", witness.public_key()) is None
    # another time or another text breaks it
    line = cosigned.signatures[-1]
    later = signed_note.Signature(line.name, line.key_id, (1700000001).to_bytes(8, "big") + line.signature[8:])
    assert cosignature.cosigned_at(note.with_signature(later), "w.test", witness.public_key()) is None
    other = signed_note.Note(text.replace("\n3\n", "\n4\n"), (line,))
    assert cosignature.cosigned_at(other, "w.test", witness.public_key()) is None


@pytest.mark.parametrize("timestamp", [-1, 2**63])
def test_a_time_outside_the_spec_range_is_refused(timestamp):
    with pytest.raises(NoteError, match="timestamp"):
        cosignature.cosign(SPEC_TEXT, SPEC_WITNESS, Ed25519PrivateKey.generate(), timestamp)


def test_witnessed_names_each_listed_witness_with_a_valid_cosignature_dated_in_time():
    mirror, first, second, stranger = (Ed25519PrivateKey.generate() for _ in range(4))
    origin = "mirror.test/simple"
    text = f"{origin}\n3\nASNFZ4mrze8BI0VniavN7wEjRWc=\n"
    note = signed_note.Note(text, (signed_note.sign(text, origin, mirror),))
    for line in (
        cosignature.cosign(text, "a.test", first, 100),
        cosignature.cosign(text, "b.test", second, 900),  # later than the bound below
        cosignature.cosign(text, "c.test", stranger, 100),  # a key nobody listed
        cosignature.cosign(text, origin, mirror, 100),  # the origin cosigning itself
    ):
        note = note.with_signature(line)
    keys = [
        ("a.test,alias.test", first.public_key()),
        ("b.test", second.public_key()),
        ("c.test", first.public_key()),
        (origin, mirror.public_key()),
    ]
    found = cosignature.witnessed(note, keys, latest=500, origin=origin)
    assert list(found) == ["a.test"] and found["a.test"] == note.signatures[1]
    assert sorted(cosignature.witnessed(note, keys, latest=900, origin=origin)) == ["a.test", "b.test"]

"""The allowed_signers rules a signature is judged by, on signatures made by ssh-keygen itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gitmirror.model.ssh_signatures import AllowedSigners, AllowedSignersError

from sshkeys import make_key

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="OpenSSH's ssh-keygen is not installed")

PAYLOAD = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nany payload\n"
JAN_2026 = 1767225600


def ssh_sign(key: Path, namespace: str = "git") -> bytes:
    return subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace],
        input=PAYLOAD,
        capture_output=True,
        check=True,
    ).stdout


def signers(key: Path, options: str = "") -> AllowedSigners:
    return AllowedSigners.parse(f"# the mirror\nmirror {options}{Path(str(key) + '.pub').read_text()}", "allowed")


def test_a_signature_is_judged_by_key_namespace_and_validity_at_the_objects_time(tmp_path: Path):
    key = make_key(tmp_path, "k")
    signature = ssh_sign(key)
    assert signers(key).check(PAYLOAD, signature, JAN_2026).principal == "mirror"
    assert signers(key, 'namespaces="git,file" ').check(PAYLOAD, signature, JAN_2026).ok
    assert "a key not in allowed" in (
        signers(key, 'namespaces="file" ').check(PAYLOAD, signature, JAN_2026).problem or ""
    )
    expired = signers(key, 'valid-before="20251231" ').check(PAYLOAD, signature, JAN_2026)
    assert not expired.ok and "outside its validity" in (expired.problem or "")
    assert signers(key, 'valid-after="20251231Z" ').check(PAYLOAD, signature, JAN_2026).ok
    assert signers(key).check(PAYLOAD, None, JAN_2026).problem == "not signed"
    assert "bad signature" in (signers(key).check(PAYLOAD + b"x", signature, JAN_2026).problem or "")
    other_namespace = signers(key).check(PAYLOAD, ssh_sign(key, "file"), JAN_2026)
    assert not other_namespace.ok and "bad signature" in (other_namespace.problem or "")


def test_an_unreadable_allowed_signers_line_is_one_error_naming_it():
    with pytest.raises(AllowedSignersError, match=r"^allowed:2: not an allowed_signers line"):
        AllowedSigners.parse("# comment\nmirror ssh-ed25519 !!!notbase64\n", "allowed")

"""Real SSH keys for the signing tests: made by ssh-keygen, trusted through an allowed_signers file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import isolated_env


def make_key(where: Path, name: str) -> Path:
    """A fresh Ed25519 key pair made by ssh-keygen; returns the private key's path."""
    key = where / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def allowed_signers(where: Path, *entries: tuple[str, Path]) -> Path:
    path = where / "allowed_signers"
    path.write_text("".join(f"{principal} {Path(str(key) + '.pub').read_text()}" for principal, key in entries))
    return path


def git(*args: str, cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["git", *args], cwd=cwd, env=isolated_env(**env), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{result.stderr}")
    return result

"""``signing:`` in mirror.yaml: the mirror's key, its checkpoint name, and who may push to main.

``key`` signs every commit and tag (``storage.signing``) and the checkpoint ``gitmirror serve``
publishes (named ``name``, the checkpoint's origin line); ``allowed_signers`` with
``require_signed_main`` makes the pre-receive hook refuse pushes to main not signed by one of its
keys; ``cosignatures`` is a directory of witness-cosigned checkpoints served beside the mirror's
own signature, where ``serve`` also keeps the cosignatures that the witnesses of ``witnesses`` (an
allowed_signers file) submit (docs/signing.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model.signed_note import NoteError, check_name

_KEYS = ("key", "name", "allowed_signers", "require_signed_main", "cosignatures", "witnesses")


@dataclass(frozen=True)
class SigningSettings:
    key: Path | None = None
    name: str | None = None
    allowed_signers: Path | None = None
    require_signed_main: bool = False
    cosignatures: Path | None = None
    witnesses: Path | None = None

    @property
    def configured(self) -> bool:
        return self.key is not None or self.allowed_signers is not None


def parse_signing(data: dict[str, Any], base: Path, where: str = "") -> SigningSettings:
    from .config import ConfigError  # config imports this module

    for key in data:
        if key not in _KEYS:
            raise ConfigError(f"{where}unknown key 'signing.{key}' (known: {', '.join(_KEYS)})")
    paths: dict[str, Path | None] = {}
    for key in ("key", "allowed_signers", "cosignatures", "witnesses"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise ConfigError(f"{where}signing.{key} must be a path, got {type(value).__name__}")
        paths[key] = base / Path(value).expanduser() if value else None
    name = data.get("name")
    if name is not None:
        try:
            check_name(name if isinstance(name, str) else "")
        except NoteError:
            raise ConfigError(f"{where}signing.name must be a name without spaces or '+', got {name!r}") from None
    require = data.get("require_signed_main", False)
    if not isinstance(require, bool):
        raise ConfigError(f"{where}signing.require_signed_main must be true or false, got {type(require).__name__}")
    if require and paths["allowed_signers"] is None:
        raise ConfigError(f"{where}signing.require_signed_main needs signing.allowed_signers")
    if paths["witnesses"] is not None and paths["cosignatures"] is None:
        raise ConfigError(f"{where}signing.witnesses needs signing.cosignatures, where submitted cosignatures are kept")
    return SigningSettings(
        paths["key"], name, paths["allowed_signers"], require, paths["cosignatures"], paths["witnesses"]
    )

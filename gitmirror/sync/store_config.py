"""``store:`` and ``s3:`` in mirror.yaml: a directory, or ``s3://BUCKET/PREFIX`` with how to reach it.

A store in a bucket still needs a directory on this machine for local state and temporary files:
``s3: {local_dir: PATH}`` (default ``mirror/local``), which becomes ``Config.store``. Every command
opens the store through ``open_store``, so every one works on both backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..storage.blobs import S3_SCHEME, Blobs
from ..storage.s3client import S3Settings, parse_url

if TYPE_CHECKING:
    from .config import Config

DEFAULT_DIRECTORY = "mirror/store"
DEFAULT_LOCAL_DIR = "mirror/local"
S3_KEYS = ("endpoint_url", "region", "profile", "presign_seconds", "local_dir")


def parse_store(data: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    """``Config``'s ``store`` (a local directory) and ``s3`` (None for a directory store)."""
    from .config import ConfigError

    text = data.get("store", DEFAULT_DIRECTORY)
    options = data.get("s3")
    if not text.startswith(S3_SCHEME):
        if options is not None:
            raise ConfigError(f"{where}s3 settings need store: s3://BUCKET/PREFIX, got store {text!r}")
        return {"store": base / text, "s3": None}
    try:
        bucket, prefix = parse_url(text)
    except ValueError as exc:
        raise ConfigError(f"{where}store {exc}") from None
    options = dict(options or {})
    for key, value in options.items():
        if key not in S3_KEYS:
            raise ConfigError(f"{where}s3: unknown key {key!r} (known: {', '.join(S3_KEYS)})")
        if key == "presign_seconds":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where}s3: {key} must be a number of seconds, got {value!r}")
        elif not isinstance(value, str):
            raise ConfigError(f"{where}s3: {key} must be a string, got {value!r}")
    local_dir = options.pop("local_dir", DEFAULT_LOCAL_DIR)
    endpoint = options.get("endpoint_url")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"{where}s3: endpoint_url must be an http(s) URL, got {endpoint!r}")
    return {"store": base / local_dir, "s3": S3Settings(bucket, prefix, **options)}


def open_store(config: Config, syncing: bool = False) -> Blobs:
    """The store ``config`` names: its bucket, else its directory. ``syncing``: for ``sync``, which
    takes a blob missing from this machine's record of a bucket to be absent (``S3Store.trust_record``)."""
    if config.s3 is not None:
        from ..storage.s3store import S3Store

        return S3Store(config.s3, config.store, trust_record=syncing)
    from ..storage.store import BlobStore

    return BlobStore(config.store)


def describe(config: Config) -> str:
    """The store in words for a user: its URL, or its directory."""
    return config.s3.url if config.s3 is not None else str(config.store)

"""``mirror.yaml``: what to mirror, from where, into which repository and store.

Every key is checked against its expected type up front, so a typo or a wrong type is reported as
one line naming the key before anything is fetched or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from pypi_simple import PYPI_SIMPLE_ENDPOINT

from .names import UnsafeNameError, normalize

CONFIG_NAME = "mirror.yaml"


class ConfigError(ValueError):
    """A configuration problem, phrased as the one line the user sees."""


@dataclass(frozen=True)
class Selection:
    """One entry of ``projects:``: a normalized name and the versions wanted."""

    name: str
    requirement: Requirement

    def wants(self, version: str) -> bool:
        if not self.requirement.specifier:
            return True
        return self.requirement.specifier.contains(version, prereleases=True)


@dataclass(frozen=True)
class Config:
    upstream: str = PYPI_SIMPLE_ENDPOINT
    repo: Path = Path("mirror/repo")
    store: Path = Path("mirror/store")
    projects: tuple[Selection, ...] = ()
    concurrency: int = 8
    timeout: float = 30.0
    retries: int = 3
    branch: str = "main"
    source: Path | None = field(default=None, compare=False)


# key -> (type check, description used in the error message)
_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "upstream": (str, "a URL"),
    "repo": (str, "a path"),
    "store": (str, "a path"),
    "projects": (list, "a list of project names or requirements"),
    "concurrency": (int, "a positive integer"),
    "timeout": ((int, float), "a number of seconds"),
    "retries": (int, "a non-negative integer"),
}


def parse_selection(text: object, where: str = "projects") -> Selection:
    if not isinstance(text, str):
        raise ConfigError(f"{where}: entries must be strings like 'attrs>=23', got {text!r}")
    try:
        requirement = Requirement(text)
        name = normalize(requirement.name)
    except (InvalidRequirement, UnsafeNameError) as exc:
        raise ConfigError(f"{where}: invalid project requirement {text!r}") from exc
    return Selection(name=name, requirement=requirement)


def load(path: Path | None = None) -> Config:
    """Load ``path``, else ``./mirror.yaml`` if present, else the built-in defaults."""
    if path is None:
        default = Path(CONFIG_NAME)
        if not default.is_file():
            return Config()
        path = default
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return from_mapping(data, base=Path(path).parent, source=Path(path))


def from_mapping(data: dict[str, Any], base: Path = Path("."), source: Path | None = None) -> Config:
    where = f"{source}: " if source else ""
    for key, value in data.items():
        if key not in _FIELDS:
            raise ConfigError(f"{where}unknown key {key!r} (known: {', '.join(_FIELDS)})")
        expected, description = _FIELDS[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"{where}{key} must be {description}, got {type(value).__name__}")
    upstream = data.get("upstream", PYPI_SIMPLE_ENDPOINT)
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}upstream must be an http(s) URL, got {upstream!r}")
    if not upstream.endswith("/"):
        upstream += "/"
    concurrency = data.get("concurrency", 8)
    if concurrency < 1:
        raise ConfigError(f"{where}concurrency must be a positive integer")
    retries = data.get("retries", 3)
    if retries < 0:
        raise ConfigError(f"{where}retries must be a non-negative integer")
    timeout = float(data.get("timeout", 30.0))
    if timeout <= 0:
        raise ConfigError(f"{where}timeout must be a positive number of seconds")
    selections = tuple(parse_selection(entry, f"{where}projects") for entry in data.get("projects", []))
    return Config(
        upstream=upstream,
        repo=base / data.get("repo", "mirror/repo"),
        store=base / data.get("store", "mirror/store"),
        projects=selections,
        concurrency=concurrency,
        timeout=timeout,
        retries=retries,
        source=source,
    )

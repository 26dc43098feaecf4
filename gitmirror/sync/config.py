"""``mirror.yaml``: what to mirror, from where, into which repository and store.

Every key is checked against its expected type up front, so a typo or a wrong type is reported as
one line naming the key before anything is fetched or written.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from ..model.hosted import HostedSettings
from ..model.hosts import check_entry as check_host_entry
from ..model.limits import DEADLINE_SECONDS, MAX_UNANNOUNCED_BYTES, MIN_RATE, Limits
from ..model.names import UnsafeNameError, normalize
from ..storage.refpolicy import name_problem
from ..storage.s3client import S3Settings
from .all_settings import FullIndex, parse_full_index
from .proxy_settings import ProxySettings, parse_proxy
from .serve_settings import ServeSettings, parse_serve
from .signing_config import SigningSettings, parse_signing
from .store_config import parse_store

if TYPE_CHECKING:
    from ..upstream.upstream import Upstream

CONFIG_NAME = "mirror.yaml"
# libyaml's safe loader when PyYAML was built with it: same documents, same errors, ten times faster
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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

    def wants_file(self, remote_file: Any) -> bool:
        return self.wants(remote_file.version)


@dataclass(frozen=True)
class ReviewSettings:
    """``review:``: sync into a branch nobody installs from; only approved changes reach ``main``."""

    enabled: bool = False
    branch: str = "incoming"
    cooldown: timedelta = timedelta(days=7)
    auto_approve: tuple[str, ...] = ()


def _default_upstream() -> str:
    from pypi_simple import PYPI_SIMPLE_ENDPOINT  # imported when needed: pypi_simple is slow to import

    return PYPI_SIMPLE_ENDPOINT


@dataclass(frozen=True)
class Config:
    upstream: str = field(default_factory=_default_upstream)
    repo: Path = Path("mirror/repo")
    store: Path = Path("mirror/store")  # the blobs' directory; for an S3 store its local directory
    s3: S3Settings | None = None  # the bucket of ``store: s3://...`` (gitmirror/sync/store_config.py)
    projects: tuple[Selection, ...] = ()
    concurrency: int = 8
    timeout: float = 30.0
    retries: int = 3
    allowed_hosts: tuple[str, ...] | None = None  # None: see gitmirror/model/hosts.py for the default
    # what to mirror beyond ``projects`` (see gitmirror/sync/selection.py)
    requirements: tuple[Path, ...] = ()
    lockfiles: tuple[Path, ...] = ()
    dependencies: bool = True
    pythons: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    sdists: bool = True
    versions: int | None = None
    exclude: tuple[str, ...] = ()
    max_file_size: int | None = None
    # bounds of every download (see gitmirror/model/limits.py)
    max_unannounced_size: int = MAX_UNANNOUNCED_BYTES
    download_deadline: float = DEADLINE_SECONDS
    download_min_rate: int = MIN_RATE
    branch: str = "main"
    review: ReviewSettings = field(default_factory=ReviewSettings)
    signing: SigningSettings = field(default_factory=SigningSettings)
    hosted: HostedSettings = field(default_factory=HostedSettings)  # projects uploaded here (docs/hosted.md)
    serve: ServeSettings = field(default_factory=ServeSettings)
    proxy: ProxySettings | None = None  # pull-through mode (gitmirror/sync/proxy_settings.py)
    full_index: FullIndex | None = None  # ``projects: all`` (gitmirror/sync/all_settings.py)
    source: Path | None = field(default=None, compare=False)
    source_sha256: str | None = field(default=None, compare=False)  # of the bytes read (gitmirror.sync.unchanged)

    @property
    def limits(self) -> Limits:
        """What one download may take, in bytes and time."""
        return Limits(self.max_unannounced_size, self.download_deadline, self.download_min_rate)

    def open_upstream(self) -> Upstream:
        """The upstream client of every writer (sync, plan, the proxy): this file's bounds and host policy."""
        from ..upstream.upstream import Upstream

        return Upstream(
            self.upstream,
            concurrency=self.concurrency,
            timeout=self.timeout,
            retries=self.retries,
            allowed_hosts=self.allowed_hosts,
            limits=self.limits,
        )


# key -> (type check, description used in the error message)
_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "upstream": (str, "a URL"),
    "repo": (str, "a path"),
    "store": (str, "a path or s3://BUCKET/PREFIX"),
    "s3": (dict, "a mapping with endpoint_url, region, profile, presign_seconds, local_dir"),
    "projects": ((list, str), "a list of project names or requirements, or 'all'"),
    "batch_projects": (int, "a positive integer"),
    "batch_minutes": ((int, float), "a number of minutes"),
    "concurrency": (int, "a positive integer"),
    "timeout": ((int, float), "a number of seconds"),
    "retries": (int, "a non-negative integer"),
    "allowed_hosts": (list, "a list of host names files may be downloaded from"),
    "requirements": (list, "a list of requirements file paths"),
    "lockfiles": (list, "a list of pylock.toml paths"),
    "dependencies": (bool, "true or false"),
    "environments": (dict, "a mapping with python and platforms lists"),
    "sdists": (bool, "true or false"),
    "versions": ((str, int), "'all', 'latest' or a number of latest versions"),
    "exclude": (list, "a list of glob patterns"),
    "max_file_size": ((str, int), "a size like 104857600 or '100MB'"),
    "max_unannounced_size": ((str, int), "a size like 1073741824 or '1GiB'"),
    "download_deadline": ((int, float), "a number of seconds"),
    "download_min_rate": ((str, int), "bytes per second like 16384 or '16KiB', or 0"),
    "review": (dict, "a mapping with enabled, branch, cooldown, auto_approve"),
    "signing": (dict, "a mapping with key, name, allowed_signers, require_signed_main, cosignatures"),
    "hosted": ((list, dict), "a list of hosted project names and glob patterns, or a mapping with projects"),
    "serve": (dict, "a mapping with host, port, workers, log_level, access_log"),
    "proxy": ((bool, dict), "true, false or a mapping with ttl, commit_interval, commit_changes, allow, deny"),
}


def _types(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


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
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    config = from_mapping(data, base=Path(path).parent, source=Path(path))
    return replace(config, source_sha256=hashlib.sha256(raw).hexdigest())


def from_mapping(data: dict[str, Any], base: Path = Path("."), source: Path | None = None) -> Config:
    where = f"{source}: " if source else ""
    for key, value in data.items():
        if key not in _FIELDS:
            raise ConfigError(f"{where}unknown key {key!r} (known: {', '.join(_FIELDS)})")
        expected, description = _FIELDS[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in _types(expected)):
            raise ConfigError(f"{where}{key} must be {description}, got {type(value).__name__}")
    upstream = data["upstream"] if "upstream" in data else _default_upstream()
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
    deadline = float(data.get("download_deadline", DEADLINE_SECONDS))
    if not 0 < deadline < float("inf"):
        raise ConfigError(f"{where}download_deadline must be a positive number of seconds")
    full_index = parse_full_index(data, where)
    listed = data.get("projects", []) if full_index is None else []
    selections = tuple(parse_selection(entry, f"{where}projects") for entry in listed)
    return Config(
        upstream=upstream,
        repo=base / data.get("repo", "mirror/repo"),
        **parse_store(data, base, where),
        projects=selections,
        concurrency=concurrency,
        timeout=timeout,
        retries=retries,
        allowed_hosts=parse_allowed_hosts(data, where),
        max_unannounced_size=_size(data, "max_unannounced_size", MAX_UNANNOUNCED_BYTES, where),
        download_deadline=deadline,
        download_min_rate=_rate(data, where),
        **parse_selection_settings(data, base, where),
        review=parse_review(data.get("review", {}), where),
        signing=parse_signing(data.get("signing", {}), base, where),
        hosted=_hosted(data, upstream, where),
        serve=parse_serve(data.get("serve", {}), where),
        proxy=parse_proxy(data.get("proxy", False), where),
        full_index=full_index,
        source=source,
    )


def _size(data: dict[str, Any], key: str, default: int, where: str) -> int:
    """A positive size in bytes (``selection.parse_size``: ``16384``, ``"16KiB"``, ``"1GB"``)."""
    from .selection import SelectionError, parse_size

    if key not in data:
        return default
    try:
        return parse_size(data[key])
    except SelectionError as exc:
        raise ConfigError(f"{where}{key} {exc}") from None


def _hosted(data: dict[str, Any], upstream: str, where: str) -> HostedSettings:
    from .hosted_config import parse_hosted

    return parse_hosted(data.get("hosted"), upstream, where)


def _rate(data: dict[str, Any], where: str) -> int:
    """``download_min_rate``: bytes per second, or 0 (the deadline alone, a fixed ceiling)."""
    from .selection import SelectionError, parse_size

    value = data.get("download_min_rate", MIN_RATE)
    if value == 0:
        return 0
    try:
        return parse_size(value)
    except SelectionError:
        raise ConfigError(
            f"{where}download_min_rate must be bytes per second like 16384 or '16KiB', or 0, got {value!r}"
        ) from None


_DURATION = re.compile(r"([0-9]+) *([wdhms])")  # fullmatch: no newline or other white space around
_DURATION_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_REVIEW_KEYS = ("enabled", "branch", "cooldown", "auto_approve")


def parse_duration(value: object, where: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``2w``, ``45s`` or a plain number of seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"{where} must be a duration like 7d, 12h, 30m or 2w, got {value!r}")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def parse_review(data: dict[str, Any], where: str = "") -> ReviewSettings:
    for key in data:
        if key not in _REVIEW_KEYS:
            raise ConfigError(f"{where}unknown key 'review.{key}' (known: {', '.join(_REVIEW_KEYS)})")
    enabled = data.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}review.enabled must be true or false, got {type(enabled).__name__}")
    branch = data.get("branch", "incoming")
    if not isinstance(branch, str) or branch == "main":
        raise ConfigError(f"{where}review.branch must be a git branch name other than main, got {branch!r}")
    problem = name_problem(branch)  # the hook's rule: a branch it would refuse could never be pushed
    if problem is not None:
        raise ConfigError(f"{where}review.branch {branch!r}: {problem}")
    cooldown = parse_duration(data.get("cooldown", "7d"), f"{where}review.cooldown")
    auto = data.get("auto_approve", [])
    if not isinstance(auto, list):
        raise ConfigError(f"{where}review.auto_approve must be a list of project names, got {type(auto).__name__}")
    names = []
    for entry in auto:
        if not isinstance(entry, str):
            raise ConfigError(f"{where}review.auto_approve: entries must be project names, got {entry!r}")
        try:
            names.append(normalize(entry))
        except UnsafeNameError as exc:
            raise ConfigError(f"{where}review.auto_approve: invalid project name {entry!r}") from exc
    return ReviewSettings(enabled=enabled, branch=branch, cooldown=cooldown, auto_approve=tuple(names))


def parse_selection_settings(data: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    """The selection keys (requirements, lockfiles, environments, filters), checked up front."""
    from . import selection

    def paths(key: str) -> tuple[Path, ...]:
        entries = data.get(key, [])
        if not all(isinstance(entry, str) and entry for entry in entries):
            raise ConfigError(f"{where}{key}: entries must be file paths")
        return tuple(base / entry for entry in entries)

    environments = data.get("environments", {})
    for key in environments:
        if key not in ("python", "platforms"):
            raise ConfigError(f"{where}unknown key 'environments.{key}' (known: python, platforms)")
    settings: dict[str, Any] = {"requirements": paths("requirements"), "lockfiles": paths("lockfiles")}
    for key, parse in (("python", selection.parse_python), ("platforms", selection.parse_platform)):
        values = environments.get(key, [])
        if not isinstance(values, list):
            raise ConfigError(f"{where}environments.{key} must be a list")
        try:
            settings["pythons" if key == "python" else key] = tuple(dict.fromkeys(parse(value) for value in values))
        except selection.SelectionError as exc:
            raise ConfigError(f"{where}environments.{key}: {exc}") from None
    if settings["platforms"] and not settings["pythons"]:
        raise ConfigError(f"{where}environments.platforms needs environments.python too (e.g. ['3.12'])")
    try:
        settings["versions"] = selection.parse_versions(data.get("versions", "all"))
    except selection.SelectionError as exc:
        raise ConfigError(f"{where}versions {exc}") from None
    try:
        size = data.get("max_file_size")
        settings["max_file_size"] = None if size is None else selection.parse_size(size)
    except selection.SelectionError as exc:
        raise ConfigError(f"{where}max_file_size {exc}") from None
    exclude = data.get("exclude", [])
    if not all(isinstance(pattern, str) and pattern for pattern in exclude):
        raise ConfigError(f"{where}exclude: entries must be glob patterns like '*-win32.whl'")
    settings["exclude"] = tuple(exclude)
    settings["dependencies"] = data.get("dependencies", True)
    settings["sdists"] = data.get("sdists", True)
    return settings


def parse_allowed_hosts(data: dict[str, Any], where: str) -> tuple[str, ...] | None:
    """``allowed_hosts:`` checked entry by entry; absent means the default policy of ``hosts.py``."""
    if "allowed_hosts" not in data:
        return None
    try:
        return tuple(check_host_entry(entry) for entry in data["allowed_hosts"])
    except ValueError as exc:
        raise ConfigError(f"{where}{exc}") from None

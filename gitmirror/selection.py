"""What to mirror: root requirements, lockfile pins, target environments and file filters.

Users rarely want the whole index; they want "what my projects need, for the Pythons and
platforms we run". This module turns ``mirror.yaml`` (``projects``, ``requirements`` files with
``-r``/``-c`` includes, PEP 751 ``lockfiles``, ``environments``, ``sdists``, ``versions``,
``exclude``, ``max_file_size``) into plain values the closure walker and ``sync`` consume. All
parsing happens before any request is made, so bad input is one clear line and nothing is fetched.
Names, versions, markers and wheel tags go through ``packaging`` only.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging import tags as wheel_tags
from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .names import UnsafeNameError, normalize
from .unchanged import text_digest

if TYPE_CHECKING:
    from .config import Config, Selection
    from .page import RemoteFile

#: Marker evaluation when no environments are configured: a dependency is followed when its marker
#: holds on at least one of these, so the mirror stays a superset of what any installer needs.
_ANY_PYTHONS = ("2.7", "3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15")
_ANY_PLATFORMS = ("manylinux_2_17_x86_64", "manylinux_2_17_aarch64", "macosx_11_0_arm64", "win_amd64", "win32")
# Patterns are matched whole (``fullmatch``), ASCII digits only: ``$`` would also take a final newline.
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?) *([kmgt]?i?b?)", re.IGNORECASE)
_PYTHON = re.compile(r"3\.[0-9]{1,2}(\.[0-9]{1,3})?|2\.7(\.[0-9]{1,3})?")
_PLATFORM = re.compile(r"[a-z0-9_]+")
_MACOS = re.compile(r"macosx_([0-9]+)_([0-9]+)_([a-z0-9_]+)")
_VERSIONS = re.compile(r"([0-9]+)( +latest)?")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


class SelectionError(ValueError):
    """A selection input (requirements file, lockfile, environment) that cannot be used as given."""


# -- configuration values -------------------------------------------------------------------------


def parse_python(text: object) -> str:
    if not isinstance(text, str | int | float) or isinstance(text, bool) or not _PYTHON.fullmatch(str(text)):
        raise SelectionError(f"python versions look like '3.12', got {text!r}")
    return str(text)


def parse_platform(text: object) -> str:
    if not isinstance(text, str) or not _PLATFORM.fullmatch(text):
        raise SelectionError(f"platforms are wheel platform tags like 'manylinux_2_28_x86_64', got {text!r}")
    if text != "any" and not (text.startswith(("manylinux", "musllinux", "macosx_", "win", "linux_"))):
        raise SelectionError(f"unknown platform tag {text!r} (manylinux_*, musllinux_*, macosx_*, win*, linux_*)")
    if text.startswith("macosx_") and not _MACOS.fullmatch(text):
        raise SelectionError(f"macOS platforms look like 'macosx_14_0_arm64', got {text!r}")
    return text


def parse_versions(value: object) -> int | None:
    """``all`` (None), ``latest`` (1), ``N`` or ``"N latest"``: how many versions per project and target."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        text = value.lower()
        if text == "all":
            return None
        if text == "latest":
            return 1
        match = _VERSIONS.fullmatch(text)
        if match and int(match.group(1)) > 0:
            return int(match.group(1))
    raise SelectionError(f"must be 'all', 'latest', a positive number or 'N latest', got {value!r}")


def parse_size(value: object) -> int:
    """Bytes from ``104857600``, ``"100MB"`` or ``"1.5 GiB"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (match := _SIZE.fullmatch(value)):
        number, unit = float(match.group(1)), match.group(2).lower()
        power = " kmgt".index(unit[0]) if unit[:1] in ("k", "m", "g", "t") else 0
        factor = (1024 if "i" in unit else 1000) ** power
        if number > 0:
            return int(number * factor)
    raise SelectionError(f"must be a positive size like 104857600 or '100MB', got {value!r}")


# -- target environments ---------------------------------------------------------------------------


def expand_platform(platform: str) -> list[str]:
    """Every platform tag a wheel may carry to install on ``platform`` (newest first)."""
    for legacy, (major, minor) in _LEGACY_MANYLINUX.items():
        if platform.startswith(legacy + "_"):
            platform = f"manylinux_{major}_{minor}_{platform[len(legacy) + 1:]}"
    if match := re.fullmatch(r"(manylinux|musllinux)_([0-9]+)_([0-9]+)_([a-z0-9_]+)", platform):
        kind, major, minor, arch = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)
        result = []
        for glibc in range(minor, -1, -1):
            result.append(f"{kind}_{major}_{glibc}_{arch}")
            if kind == "manylinux" and major == 2:
                alias = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(glibc)
                if alias and (glibc == 17 or arch in ("x86_64", "i686")):
                    result.append(f"{alias}_{arch}")
        return result + [f"linux_{arch}"]
    if match := _MACOS.fullmatch(platform):
        version = (int(match.group(1)), int(match.group(2)))
        return list(wheel_tags.mac_platforms(version, match.group(3)))
    return [platform]


def _marker_environment(python: str, platform: str) -> dict[str, str]:
    full = python if python.count(".") == 2 else f"{python}.0"
    if platform.startswith("win"):
        system, sys_platform, os_name = "Windows", "win32", "nt"
        machine = {"win_amd64": "AMD64", "win32": "x86", "win_arm64": "ARM64"}.get(platform, "AMD64")
    elif platform.startswith("macosx"):
        system, sys_platform, os_name = "Darwin", "darwin", "posix"
        machine = "arm64" if platform.endswith(("arm64", "universal2")) else "x86_64"
    elif platform == "any":
        system, sys_platform, os_name, machine = "Linux", "linux", "posix", "x86_64"
    else:
        system, sys_platform, os_name = "Linux", "linux", "posix"
        arch = re.fullmatch(r"(?:(?:many|musl)linux_[0-9]+_[0-9]+|manylinux[0-9]+|linux)_([a-z0-9_]+)", platform)
        machine = arch.group(1) if arch else "x86_64"
    return {
        "python_version": ".".join(full.split(".")[:2]),
        "python_full_version": full,
        "implementation_name": "cpython",
        "implementation_version": full,
        "platform_python_implementation": "CPython",
        "os_name": os_name,
        "sys_platform": sys_platform,
        "platform_system": system,
        "platform_machine": machine,
        "platform_release": "",
        "platform_version": "",
    }


@dataclass(frozen=True)
class Target:
    """One environment the mirror must serve: a Python version on a platform."""

    python: str
    platform: str

    @property
    def label(self) -> str:
        return f"py{self.python}-{self.platform}"

    @cached_property
    def markers(self) -> dict[str, str]:
        return _marker_environment(self.python, self.platform)

    @cached_property
    def tags(self) -> frozenset[wheel_tags.Tag]:
        version = tuple(int(part) for part in self.python.split(".")[:2])
        platforms = expand_platform(self.platform) if self.platform != "any" else ["any"]
        found = set(wheel_tags.cpython_tags(version, platforms=platforms))
        found |= set(wheel_tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms))
        return frozenset(found)

    def allows_python(self, requires_python: str | None) -> bool:
        if not requires_python:
            return True
        try:
            return SpecifierSet(requires_python).contains(self.markers["python_full_version"], prereleases=True)
        except InvalidSpecifier:
            return True  # an unparseable Requires-Python is the installer's problem, not a reason to skip


#: Targets index used when no environments are configured: every file and every marker counts.
ANY = -1


@dataclass(frozen=True)
class Rules:
    """The file filters of ``mirror.yaml``; ``targets`` empty means "every environment"."""

    targets: tuple[Target, ...] = ()
    sdists: bool = True
    versions: int | None = None
    exclude: tuple[str, ...] = ()
    max_file_size: int | None = None
    _marker_cache: dict[tuple[str, int, frozenset[str]], bool] = field(default_factory=dict, compare=False)

    @property
    def target_ids(self) -> frozenset[int]:
        return frozenset(range(len(self.targets))) if self.targets else frozenset({ANY})

    def label(self, target_ids: Iterable[int]) -> str:
        ids = sorted(target_ids)
        return ", ".join(self.targets[i].label for i in ids if i != ANY) or "any environment"

    def project_excluded(self, project: str) -> bool:
        return any(fnmatch.fnmatchcase(project, pattern) for pattern in self.exclude)

    def excluded(self, project: str, remote_file: RemoteFile) -> str | None:
        """Why a file is never mirrored (exclude glob, size limit, sdists off), or None."""
        for pattern in self.exclude:
            if fnmatch.fnmatchcase(remote_file.filename, pattern) or fnmatch.fnmatchcase(project, pattern):
                return f"excluded by {pattern!r}"
        if self.max_file_size is not None and (remote_file.size or 0) > self.max_file_size:
            return f"larger than max_file_size ({remote_file.size} > {self.max_file_size} bytes)"
        if not self.sdists and not remote_file.filename.endswith(".whl"):
            return "sdists: false"
        return None

    def installable_in(self, remote_file: RemoteFile) -> frozenset[int]:
        """The targets this file can be installed in (wheel tags and Requires-Python)."""
        if not self.targets:
            return frozenset({ANY})
        file_tags: frozenset[wheel_tags.Tag] | None = None
        if remote_file.filename.endswith(".whl"):
            try:
                file_tags = parse_wheel_filename(remote_file.filename)[3]
            except InvalidWheelFilename:
                return frozenset()
        return frozenset(
            index
            for index, target in enumerate(self.targets)
            if target.allows_python(remote_file.requires_python)
            and (file_tags is None or not file_tags.isdisjoint(target.tags))
        )

    def marker_holds(self, marker: Marker | None, target: int, extras: frozenset[str]) -> bool:
        """Whether a dependency applies in ``target`` given the requested extras."""
        if marker is None:
            return True
        key = (str(marker), target, extras)
        cached = self._marker_cache.get(key)
        if cached is None:
            if target == ANY:
                environments = [_marker_environment(py, plat) for py in _ANY_PYTHONS for plat in _ANY_PLATFORMS]
            else:
                environments = [self.targets[target].markers]
            cached = any(
                marker.evaluate({**environment, "extra": extra})
                for environment in environments
                for extra in (sorted(extras) or [""])
            )
            self._marker_cache[key] = cached
        return cached


def rules_from(config: Config) -> Rules:
    targets = tuple(Target(python, platform) for python in config.pythons for platform in config.platforms)
    if config.pythons and not config.platforms:
        targets = tuple(Target(python, "any") for python in config.pythons)
    if config.platforms and not config.pythons:
        raise SelectionError("environments: platforms need python versions too (python: ['3.12'])")
    return Rules(
        targets=targets,
        sdists=config.sdists,
        versions=config.versions,
        exclude=config.exclude,
        max_file_size=config.max_file_size,
    )


# -- roots: what the user asked for ----------------------------------------------------------------


@dataclass(frozen=True)
class Root:
    """A requirement the user wrote, with where they wrote it (for error chains)."""

    requirement: Requirement
    origin: str

    @property
    def name(self) -> str:
        return normalize(self.requirement.name)


@dataclass(frozen=True)
class Pin:
    """One file a lockfile pins, by hash."""

    project: str
    sha256: str
    filename: str | None
    lockfile: str


@dataclass
class Roots:
    requirements: list[Root] = field(default_factory=list)
    constraints: dict[str, SpecifierSet] = field(default_factory=dict)
    pins: dict[str, list[Pin]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: every file read, by resolved path, with the sha256 of its bytes (``gitmirror.unchanged``)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted({root.name for root in self.requirements} | set(self.pins))

    def read(self, path: Path, text: str) -> None:
        self.sources[str(path.resolve())] = text_digest(text)


def roots(config: Config, selections: Sequence[Selection], with_files: bool = True) -> Roots:
    """Everything the user selected; ``with_files`` adds the configured requirements and lockfiles."""
    result = Roots()
    for selection in selections:
        result.requirements.append(Root(selection.requirement, f"projects: {selection.requirement}"))
    if with_files:
        for path in config.requirements:
            read_requirements(Path(path), result, seen=set())
        for path in config.lockfiles:
            read_lockfile(Path(path), result)
    return result


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Lines with ``\\`` continuations joined and comments removed, with their first line number."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        line = raw
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            yield start, line
    if pending.strip():
        yield start, re.sub(r"(^|\s)#.*$", "", pending).strip()


_IGNORED_OPTIONS = (
    "-i", "--index-url", "--extra-index-url", "--no-index", "-f", "--find-links", "--trusted-host",
    "--pre", "--prefer-binary", "--require-hashes", "--only-binary", "--no-binary", "--use-feature",
)


def read_requirements(path: Path, into: Roots, seen: set[Path], constraint: bool = False) -> None:
    """Parse a pip requirements file (``-r`` includes, ``-c`` constraints) into ``into``."""
    resolved = path.resolve()
    if resolved in seen:
        return  # an include cycle adds nothing new
    seen.add(resolved)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SelectionError(f"cannot read requirements file {path}: {exc.strerror}") from None
    into.read(path, text)
    for number, line in _logical_lines(text):
        where = f"{path}:{number}"
        option = re.fullmatch(r"(-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+|(?=\S))(\S+)", line)
        if option:
            target = path.parent / option.group(2)
            is_constraint = option.group(1) in ("-c", "--constraint")
            read_requirements(target, into, seen, constraint=constraint or is_constraint)
            continue
        if line.startswith(("-e", "--editable")):
            into.warnings.append(f"{where}: editable requirement skipped (nothing to mirror)")
            continue
        if line.startswith("-"):
            if line.split("=")[0].split()[0] not in _IGNORED_OPTIONS:
                raise SelectionError(f"{where}: unsupported option {line.split()[0]!r}")
            continue
        text_requirement = re.split(r"\s+--hash[=\s]", line, maxsplit=1)[0].strip()
        try:
            requirement = Requirement(text_requirement)
            name = normalize(requirement.name)
        except (InvalidRequirement, UnsafeNameError):
            if "/" in text_requirement or text_requirement.startswith("."):
                into.warnings.append(f"{where}: local path or URL {text_requirement!r} skipped")
                continue
            raise SelectionError(f"{where}: invalid requirement {text_requirement!r}") from None
        if requirement.url:
            into.warnings.append(f"{where}: direct URL requirement {requirement.name!r} skipped")
            continue
        if constraint:
            previous = into.constraints.get(name, SpecifierSet())
            into.constraints[name] = previous & requirement.specifier
        else:
            into.requirements.append(Root(requirement, f"{where} ({text_requirement})"))


def read_lockfile(path: Path, into: Roots) -> None:
    """Pins from a PEP 751 ``pylock.toml``: every wheel and sdist by sha256."""
    import tomllib  # here: 14 ms of every sync's start, for configurations that name a lockfile

    from packaging.pylock import Pylock, PylockValidationError

    try:
        text = path.read_text(encoding="utf-8")
        into.read(path, text)
        data: dict[str, Any] = tomllib.loads(text)
    except OSError as exc:
        raise SelectionError(f"cannot read lockfile {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SelectionError(f"lockfile {path}: not valid TOML ({exc})") from None
    try:
        lock = Pylock.from_dict(data)
    except PylockValidationError as exc:
        raise SelectionError(f"lockfile {path}: {exc}") from None
    for package in lock.packages:
        name = normalize(str(package.name))
        files = list(package.wheels or []) + ([package.sdist] if package.sdist else [])
        if not files:
            into.warnings.append(f"{path}: {name} is not from an index (vcs, directory or archive), skipped")
            continue
        for locked in files:
            sha256 = (locked.hashes or {}).get("sha256")
            filename = _locked_filename(locked)
            if not sha256:
                raise SelectionError(f"lockfile {path}: {filename or name} has no sha256 hash to mirror by")
            into.pins.setdefault(name, []).append(Pin(name, sha256.lower(), filename, str(path)))


def _locked_filename(locked: Any) -> str | None:
    try:
        return str(locked.filename)
    except Exception:  # packaging raises when neither name, url nor path give one
        return None


def version_key(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None

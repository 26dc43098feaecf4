"""What to mirror: target environments and file filters (the roots asked for: ``gitmirror.sync.roots``).

Users rarely want the whole index; they want "what my projects need, for the Pythons and
platforms we run". This module turns ``mirror.yaml``'s ``environments``, ``sdists``,
``versions``, ``exclude`` and ``max_file_size`` into plain values the closure walker and ``sync``
consume. All parsing happens before any request is made, so bad input is one clear line and
nothing is fetched.
Names, versions, markers and wheel tags go through ``packaging`` only.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from packaging import tags as wheel_tags
from packaging.markers import Marker
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from ..model.hosted import HostedSettings

if TYPE_CHECKING:
    from ..model.page import RemoteFile
    from .config import Config

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
            platform = f"manylinux_{major}_{minor}_{platform[len(legacy) + 1 :]}"
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
    hosted: HostedSettings = field(default_factory=HostedSettings)  # never taken from upstream (model.hosted)
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
        hosted=config.hosted,
    )

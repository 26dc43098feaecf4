"""Roots: what the user asked for - ``projects``, pip requirements files and PEP 751 lockfiles.

Read before any request is made, so a bad file is one clear line and nothing is fetched; the
closure walker (``gitmirror.sync.closure``) starts from these roots, the rules of ``gitmirror.sync.selection``
decide which of their files to take.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from ..model.names import UnsafeNameError, normalize
from .selection import SelectionError
from .unchanged import text_digest

if TYPE_CHECKING:
    from .config import Config, Selection


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
    #: every file read, by resolved path, with the sha256 of its bytes (``gitmirror.sync.unchanged``)
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
    "-i",
    "--index-url",
    "--extra-index-url",
    "--no-index",
    "-f",
    "--find-links",
    "--trusted-host",
    "--pre",
    "--prefer-binary",
    "--require-hashes",
    "--only-binary",
    "--no-binary",
    "--use-feature",
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
    import tomllib  # here, not at start: only configurations that name a lockfile need it

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

"""Requirement closures end to end: requirements files, extras, markers, target environments, lockfiles."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from gitmirror.model.page import RemoteFile, RemoteProject
from gitmirror.storage.metadata import CoreMetadata
from gitmirror.sync import closure
from gitmirror.sync.config import from_mapping
from gitmirror.sync.roots import Root, Roots
from gitmirror.sync.selection import rules_from

from conftest import Mirror
from fakeupstream import FakeUpstream, build_sdist, build_wheel

LINUX = "environments:\n  python: ['3.11', '3.12']\n  platforms: [manylinux_2_28_x86_64]\n"
LINUX_AND_WINDOWS = "environments:\n  python: ['3.11', '3.12']\n  platforms: [manylinux_2_28_x86_64, win_amd64]\n"


def populate(up: FakeUpstream) -> None:
    """app -> lib (1.0, 2.0 -> deep), winonly on Windows, oldpy below 3.12, extra-dep with [fancy]."""
    up.add(
        "app",
        build_wheel(
            "app",
            "1.0",
            extras=["fancy"],
            requires_dist=[
                "lib>=1.0",
                'winonly; sys_platform == "win32"',
                'oldpy; python_version < "3.12"',
                'extra-dep; extra == "fancy"',
                'never-needed; python_version < "3.0"',
            ],
        ),
    )
    up.add("app", build_sdist("app", "1.0"))
    up.add("lib", build_wheel("lib", "1.0"))
    up.add("lib", build_wheel("lib", "2.0", requires_dist=["deep"]))
    up.add("deep", build_wheel("deep", "1.0"))
    for name in ("winonly", "oldpy", "extra-dep", "never-needed", "unrelated"):
        up.add(name, build_wheel(name, "1.0"))
    for tag in ("cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-win_amd64", "cp311-cp311-macosx_14_0_arm64"):
        up.add("native", build_wheel("native", "1.0", tag=tag))


def mirrored(mirror: Mirror) -> dict[str, list[str]]:
    """project -> filenames recorded on main."""
    result: dict[str, list[str]] = {}
    for path in mirror.git("ls-tree", "-r", "--name-only", "main").split():
        if path.startswith("projects/"):
            lines = mirror.git("show", f"main:{path}").splitlines()
            result[json.loads(lines[0])["name"]] = sorted(json.loads(line)["filename"] for line in lines[1:])
    return result


def write_requirements(root: Path) -> None:
    (root / "reqs").mkdir()
    base = "# the application\napp[fancy] \\\n  >=1.0  # pinned loosely\n-c pins.txt\n"
    (root / "reqs" / "base.txt").write_text(base)
    (root / "reqs" / "pins.txt").write_text("lib<2\n")
    (root / "requirements.txt").write_text("-r reqs/base.txt\n--index-url http://127.0.0.1:9/simple/\n")


def test_requirements_closure_for_two_environments(mirror: Mirror, upstream: FakeUpstream) -> None:
    populate(upstream)
    write_requirements(mirror.root)
    mirror.configure("requirements: [requirements.txt]\nsdists: false\n" + LINUX)
    mirror.run("sync", check=True)
    linux = mirrored(mirror)
    # lib<2 from the constraints file keeps lib 2.0 (and so deep) out; no Windows target, no winonly.
    assert linux == {
        "app": ["app-1.0-py3-none-any.whl"],
        "lib": ["lib-1.0-py3-none-any.whl"],
        "oldpy": ["oldpy-1.0-py3-none-any.whl"],
        "extra-dep": ["extra_dep-1.0-py3-none-any.whl"],
    }

    mirror.configure("requirements: [requirements.txt]\nsdists: false\n" + LINUX_AND_WINDOWS)
    mirror.run("sync", check=True)
    both = mirrored(mirror)
    assert set(both) == set(linux) | {"winonly"}  # the Windows-only dependency, only for the Windows target
    assert both["winonly"] == ["winonly-1.0-py3-none-any.whl"]
    assert not any("never-needed" in record.path for record in upstream.requests)


def test_without_environments_every_marker_and_file_counts(mirror: Mirror, upstream: FakeUpstream) -> None:
    populate(upstream)
    mirror.configure("projects: [app]\n")
    mirror.run("sync", check=True)
    result = mirrored(mirror)
    # no extras requested: extra-dep stays out; python 2 only dependency is followed (superset).
    assert set(result) == {"app", "lib", "deep", "winonly", "oldpy", "never-needed"}
    assert result["app"] == ["app-1.0-py3-none-any.whl", "app-1.0.tar.gz"]
    assert result["lib"] == ["lib-1.0-py3-none-any.whl", "lib-2.0-py3-none-any.whl"]


def test_excluded_platform_wheel_is_never_downloaded(mirror: Mirror, upstream: FakeUpstream) -> None:
    populate(upstream)
    mirror.configure("projects: [native]\n" + LINUX)
    mirror.run("sync", check=True)
    assert mirrored(mirror) == {"native": ["native-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"]}
    downloaded = [record.path for record in upstream.requests if record.path.startswith("/files/")]
    assert not any("win_amd64" in path or "macosx" in path for path in downloaded)
    assert any("manylinux" in path for path in downloaded)


def test_versions_latest_and_exclude(mirror: Mirror, upstream: FakeUpstream) -> None:
    populate(upstream)
    upstream.add("lib", build_wheel("lib", "3.0rc1"))
    mirror.configure("projects: [lib, unrelated, native]\nversions: latest\nexclude: ['unrelated', '*macosx*']\n")
    mirror.run("sync", check=True)
    result = mirrored(mirror)
    assert result["lib"] == ["lib-2.0-py3-none-any.whl"]  # latest final release, not the pre-release
    assert result["deep"] == ["deep-1.0-py3-none-any.whl"]  # followed from lib 2.0
    assert "unrelated" not in result
    assert not any("macosx" in name for name in result["native"]) and len(result["native"]) == 2


def test_unresolvable_dependency_names_the_chain(mirror: Mirror, upstream: FakeUpstream) -> None:
    upstream.add("top", build_wheel("top", "1.0", requires_dist=["middle>=1"]))
    upstream.add("middle", build_wheel("middle", "1.0", requires_dist=["ghost>=2"]))
    upstream.add("ghost", build_wheel("ghost", "1.0"))
    mirror.configure("projects: [top]\n")
    result = mirror.run("sync")
    assert result.returncode == 1
    assert "ghost: no release matches >=2" in result.stderr
    assert "top 1.0 requires middle>=1 -> middle 1.0 requires ghost>=2" in result.stderr
    assert set(mirrored(mirror)) == {"top", "middle"}  # the rest is mirrored


def test_missing_dependency_project_names_the_chain(mirror: Mirror, upstream: FakeUpstream) -> None:
    upstream.add("top", build_wheel("top", "1.0", requires_dist=["vanished"]))
    mirror.configure("projects: [top]\n")
    result = mirror.run("sync")
    assert result.returncode == 1
    assert "vanished: not found upstream (required by projects: top -> top 1.0 requires vanished)" in result.stderr


def test_metadata_read_from_wheel_when_no_pep658(mirror: Mirror, upstream: FakeUpstream) -> None:
    upstream.add("top", build_wheel("top", "1.0", requires_dist=["dep"]), core_metadata=False)
    upstream.add("dep", build_wheel("dep", "1.0"))
    mirror.configure("projects: [top]\n")
    mirror.run("sync", check=True)
    assert set(mirrored(mirror)) == {"top", "dep"}
    wheel_downloads = [r.path for r in upstream.requests if r.path.endswith("top-1.0-py3-none-any.whl")]
    assert len(wheel_downloads) == 1  # read for its metadata and kept: one download, not two


def pylock(entries: list[tuple[str, str, str, str]]) -> str:
    """A PEP 751 lock: (name, version, filename, sha256) per wheel."""
    text = 'lock-version = "1.0"\ncreated-by = "tests"\n'
    for name, version, filename, sha in entries:
        text += (
            f'\n[[packages]]\nname = "{name}"\nversion = "{version}"\nindex = "http://127.0.0.1/simple/"\n'
            f'wheels = [{{ name = "{filename}", url = "http://127.0.0.1/files/{filename}", '
            f'hashes = {{ sha256 = "{sha}" }} }}]\n'
        )
    return text


def test_lockfile_mirrors_exactly_the_pinned_files(mirror: Mirror, upstream: FakeUpstream) -> None:
    populate(upstream)
    lib1 = upstream.artifact("lib", "lib-1.0-py3-none-any.whl")
    native = upstream.artifact("native", "native-1.0-cp312-cp312-win_amd64.whl")
    (mirror.root / "pylock.toml").write_text(
        pylock([("lib", "1.0", lib1.filename, lib1.sha256), ("native", "1.0", native.filename, native.sha256)])
    )
    # the lock is exact: no closure, no environment filter (the Windows wheel is pinned)
    mirror.configure("lockfiles: [pylock.toml]\n" + LINUX)
    mirror.run("sync", check=True)
    assert mirrored(mirror) == {"lib": [lib1.filename], "native": [native.filename]}


def test_lockfile_hash_no_longer_upstream_is_an_error_naming_the_file(mirror: Mirror, upstream: FakeUpstream) -> None:
    populate(upstream)
    lib1 = upstream.artifact("lib", "lib-1.0-py3-none-any.whl")
    (mirror.root / "pylock.toml").write_text(
        pylock([("lib", "1.0", lib1.filename, lib1.sha256), ("lib", "2.0", "lib-2.0-py3-none-any.whl", "ab" * 32)])
    )
    mirror.configure("lockfiles: [pylock.toml]\n")
    result = mirror.run("sync")
    assert result.returncode == 1
    assert "pylock.toml: lib-2.0-py3-none-any.whl (sha256 abababababababab...) not offered upstream" in result.stderr
    assert mirrored(mirror) == {"lib": [lib1.filename]}


@pytest.mark.parametrize(
    ("files", "text", "message"),
    [
        (
            {"requirements.txt": "app\nnot a requirement!\n"},
            "requirements: [requirements.txt]",
            "requirements.txt:2: invalid requirement 'not a requirement!'",
        ),
        ({}, "requirements: [missing.txt]", "cannot read requirements file"),
        ({"pylock.toml": "lock-version = [\n"}, "lockfiles: [pylock.toml]", "pylock.toml: not valid TOML"),
        ({"pylock.toml": 'lock-version = "1.0"\n'}, "lockfiles: [pylock.toml]", "pylock.toml"),
    ],
)
def test_bad_selection_files_are_one_line_errors(mirror: Mirror, files: dict, text: str, message: str) -> None:
    for name, content in files.items():
        (mirror.root / name).write_text(content)
    mirror.configure(text + "\n")
    result = mirror.run("sync")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not mirror.repo.exists() or not mirror.git("for-each-ref").strip()


def test_releases_without_metadata_give_one_warning_line(mirror: Mirror, upstream: FakeUpstream) -> None:
    for version in ("0.1", "0.2", "0.3"):
        upstream.add("oldie", build_sdist("oldie", version))
    upstream.add("oldie", build_wheel("oldie", "1.0", requires_dist=["deep"]))
    upstream.add("deep", build_wheel("deep", "1.0"))
    mirror.configure("projects: [oldie]\nversions: all\n")
    result = mirror.run("sync", check=True)
    warnings = [line for line in result.stderr.splitlines() if "not followed" in line]
    assert len(warnings) == 1, result.stderr
    assert "oldie: dependencies of 3 release(s) unknown" in warnings[0]
    assert all(version in warnings[0] for version in ("0.1", "0.2", "0.3"))
    assert "deep" in mirrored(mirror)  # the wheel's dependencies are still followed


def test_a_walk_over_stored_wheels_reads_their_dependencies_from_the_cache(
    mirror: Mirror, upstream: FakeUpstream
) -> None:
    """Every run that walks the releases again (``--full``, or an upstream without a serial) took
    each release's dependencies out of its stored wheel, unzipping it again; what an earlier run
    parsed is kept instead (``state``, the local state). Probe: the stored wheel is made unreadable, and
    the next walk still knows its dependencies without asking upstream; without the cache it reads
    the stored PEP 658 file, and without that it must ask upstream for it."""
    top = build_wheel("top", "1.0", requires_dist=["dep"])
    upstream.add("top", top)
    upstream.add("dep", build_wheel("dep", "1.0"))
    mirror.configure("projects: [top]\n")
    mirror.run("sync", check=True)
    assert set(mirrored(mirror)) == {"top", "dep"}
    stored = mirror.store / "blobs" / top.sha256[:2] / top.sha256[2:4] / top.sha256
    stored.chmod(0o644)
    stored.write_bytes(b"no longer a zip")

    mark = len(upstream.requests)
    again = mirror.run("sync", "--full", check=True)
    assert "not followed" not in again.stderr and "dep" in mirrored(mirror)
    assert not [record.path for record in upstream.requests[mark:] if record.path.startswith("/files/")]

    (mirror.store / "state" / "local.sqlite3").unlink()
    mark = len(upstream.requests)
    mirror.run("sync", "--full", check=True)
    assert not [record.path for record in upstream.requests[mark:] if record.path.startswith("/files/")]

    (mirror.store / "state" / "local.sqlite3").unlink()
    assert top.metadata_sha256
    (mirror.store / "blobs" / top.metadata_sha256[:2] / top.metadata_sha256[2:4] / top.metadata_sha256).unlink()
    mark = len(upstream.requests)
    mirror.run("sync", "--full", check=True)
    asked = [record.path for record in upstream.requests[mark:] if record.path.startswith("/files/")]
    assert asked == [f"/files/top/{top.filename}.metadata"]


def test_a_release_listing_more_requirements_than_any_real_one_is_followed_only_so_far(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile upstream's metadata may list a million requirements, each a page request: the walk
    follows the first ``MAX_REQUIREMENTS_FOLLOWED`` and says so once."""
    monkeypatch.setattr(closure, "MAX_REQUIREMENTS_FOLLOWED", 3)
    asked: list[str] = []

    def page(name: str) -> RemoteProject:
        filename = f"{name.replace('-', '_')}-1.0-py3-none-any.whl"
        url = f"http://127.0.0.1:9/files/{filename}"
        wheel = RemoteFile(filename, url, "1.0", "0" * 64, 1, None, None, False, None, None)
        return RemoteProject(name, [wheel])

    class Pages:
        async def get(self, name: str) -> RemoteProject:
            asked.append(name)
            return page(name)

    class Metadata:
        async def get(self, project: str, version: str, files: list, chosen: set) -> CoreMetadata:
            wide = tuple(f"dep-{number}" for number in range(10)) if project == "wide" else ()
            return CoreMetadata(project, version, requires_dist=wide)

    resolver = closure.Resolver(rules_from(from_mapping({"projects": ["wide"]})), Pages(), Metadata(), follow=True)  # type: ignore[arg-type]
    roots = Roots(requirements=[Root(Requirement("wide"), "mirror.yaml")])
    choices = asyncio.run(resolver.resolve(roots))
    assert sorted(asked) == ["dep-0", "dep-1", "dep-2", "wide"]
    assert choices["wide"].notes == ["wide 1.0 lists 10 requirements: only the first 3 are followed"]

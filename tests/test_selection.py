"""Selection inputs: requirements files, lockfiles, target environments, filters and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.tags import Tag

from gitmirror.model.page import RemoteFile
from gitmirror.sync.config import ConfigError, from_mapping
from gitmirror.sync.roots import Roots, read_lockfile, read_requirements, roots
from gitmirror.sync.selection import SelectionError, Target, expand_platform, parse_size, parse_versions, rules_from

from conftest import Mirror


def remote(filename: str, requires_python: str | None = None, size: int = 10) -> RemoteFile:
    return RemoteFile(filename, "http://127.0.0.1/f", "1.0", "a" * 64, size, requires_python, None, False, None, None)


def test_platform_expansion_follows_the_tag_specs() -> None:
    linux = expand_platform("manylinux_2_28_x86_64")
    assert linux[0] == "manylinux_2_28_x86_64" and "manylinux2014_x86_64" in linux and "manylinux1_x86_64" in linux
    assert "manylinux_2_29_x86_64" not in linux and linux[-1] == "linux_x86_64"
    assert expand_platform("manylinux2014_aarch64")[0] == "manylinux_2_17_aarch64"
    assert "macosx_11_0_universal2" in expand_platform("macosx_14_0_arm64")
    assert expand_platform("win_amd64") == ["win_amd64"]


def test_target_tags_and_markers() -> None:
    target = Target("3.11", "manylinux_2_28_x86_64")
    assert Tag("cp311", "cp311", "manylinux_2_17_x86_64") in target.tags
    assert Tag("cp38", "abi3", "manylinux2014_x86_64") in target.tags
    assert Tag("py3", "none", "any") in target.tags
    assert Tag("cp312", "cp312", "manylinux_2_17_x86_64") not in target.tags
    assert Tag("cp311", "cp311", "manylinux_2_34_x86_64") not in target.tags
    windows = Target("3.12", "win_amd64")
    assert windows.markers["sys_platform"] == "win32" and windows.markers["platform_machine"] == "AMD64"
    assert Target("3.12", "macosx_14_0_arm64").markers["platform_machine"] == "arm64"


def test_rules_filter_files_by_tags_python_size_and_globs() -> None:
    config = from_mapping(
        {
            "environments": {"python": ["3.11"], "platforms": ["manylinux_2_28_x86_64", "win_amd64"]},
            "exclude": ["*-win32.whl"],
            "max_file_size": "1kB",
        }
    )
    rules = rules_from(config)
    assert rules.installable_in(remote("x-1.0-cp311-cp311-win_amd64.whl")) == {1}
    assert rules.installable_in(remote("x-1.0-py3-none-any.whl")) == {0, 1}
    assert rules.installable_in(remote("x-1.0-py3-none-any.whl", requires_python=">=3.12")) == frozenset()
    assert rules.installable_in(remote("x-1.0.tar.gz")) == {0, 1}
    assert rules.excluded("x", remote("x-1.0-cp311-cp311-win32.whl")) == "excluded by '*-win32.whl'"
    assert "max_file_size" in (rules.excluded("x", remote("x-1.0.tar.gz", size=1001)) or "")
    assert rules.excluded("x", remote("x-1.0.tar.gz", size=1000)) is None
    no_sdists = rules_from(from_mapping({"sdists": False}))
    assert no_sdists.excluded("x", remote("x-1.0.tar.gz")) == "sdists: false"


def test_versions_and_sizes_parse() -> None:
    assert parse_versions("all") is None and parse_versions("latest") == 1
    assert parse_versions(3) == 3 and parse_versions("2 latest") == 2
    assert parse_size("100MB") == 100_000_000 and parse_size("1.5 GiB") == int(1.5 * 1024**3) and parse_size(5) == 5
    for bad in ("0", "newest", -1):
        with pytest.raises(SelectionError):
            parse_versions(bad)
    with pytest.raises(SelectionError):
        parse_size("lots")


def test_requirements_files_with_includes_constraints_and_options(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "requirements.txt").write_text(
        "# comment\n"
        "-r sub/more.txt\n"
        "--constraint=sub/constraints.txt\n"
        "--extra-index-url http://127.0.0.1:9/simple/\n"
        'Django>=4.2,<5 ; python_version >= "3.10"  # web\n'
        "requests[socks] \\\n    ==2.31.0 --hash=sha256:" + "0" * 64 + "\n"
        "-e ./local-project\n"
        "pkg @ http://127.0.0.1/pkg.whl\n"
    )
    (tmp_path / "sub" / "more.txt").write_text("attrs\n-r ../requirements.txt\n")  # a cycle is harmless
    (tmp_path / "sub" / "constraints.txt").write_text("urllib3<2\nurllib3!=1.26.0\n")
    into = Roots()
    read_requirements(tmp_path / "requirements.txt", into, seen=set())
    names = [(root.name, str(root.requirement.specifier)) for root in into.requirements]
    assert names == [("attrs", ""), ("django", "<5,>=4.2"), ("requests", "==2.31.0")]
    assert into.requirements[2].requirement.extras == {"socks"}
    assert str(into.requirements[1].requirement.marker) == 'python_version >= "3.10"'
    assert into.requirements[1].origin.startswith(f"{tmp_path / 'requirements.txt'}:5")
    assert into.constraints["urllib3"].contains("1.26.1") and not into.constraints["urllib3"].contains("1.26.0")
    assert len(into.warnings) == 2  # the editable and the direct URL, skipped with a reason


def test_bad_requirement_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("ok\n\n--frobnicate\n")
    with pytest.raises(SelectionError, match=r"r.txt:3: unsupported option '--frobnicate'"):
        read_requirements(tmp_path / "r.txt", Roots(), seen=set())


def test_lockfile_pins_by_hash(tmp_path: Path) -> None:
    (tmp_path / "pylock.toml").write_text(
        'lock-version = "1.0"\ncreated-by = "t"\n'
        '[[packages]]\nname = "attrs"\nversion = "23.1.0"\n'
        'sdist = { url = "http://127.0.0.1/attrs-23.1.0.tar.gz", hashes = { sha256 = "' + "B" * 64 + '" } }\n'
        '[[packages]]\nname = "mine"\ndirectory = { path = "." }\n'
    )
    into = Roots()
    read_lockfile(tmp_path / "pylock.toml", into)
    assert [(pin.project, pin.sha256, pin.filename) for pin in into.pins["attrs"]] == [
        ("attrs", "b" * 64, "attrs-23.1.0.tar.gz")
    ]
    assert "mine is not from an index" in into.warnings[0]


def test_roots_include_files_only_for_the_configured_selection(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("extra-project\n")
    config = from_mapping({"projects": ["a"], "requirements": ["r.txt"]}, base=tmp_path)
    assert [root.name for root in roots(config, config.projects).requirements] == ["a", "extra-project"]
    assert [root.name for root in roots(config, config.projects, with_files=False).requirements] == ["a"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"environments": {"python": ["3.12"], "platforms": ["solaris"]}}, "environments.platforms: unknown platform"),
        ({"environments": {"python": "3.12"}}, "environments.python must be a list"),
        ({"environments": {"pythons": ["3.12"]}}, "unknown key 'environments.pythons'"),
        ({"versions": "newest"}, "versions must be 'all', 'latest'"),
        ({"max_file_size": "huge"}, "max_file_size must be a positive size"),
        ({"dependencies": "yes"}, "dependencies must be true or false"),
        ({"exclude": [""]}, "exclude: entries must be glob patterns"),
        ({"requirements": "r.txt"}, "requirements must be a list of requirements file paths"),
    ],
)
def test_config_errors_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("'", "'")):
        from_mapping(data)


def test_cli_config_error_is_one_line(mirror: Mirror) -> None:
    mirror.configure("projects: [demo-pkg]\nversions: sometimes\n")
    result = mirror.run("plan")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gitmirror: error: mirror.yaml: versions must be 'all', 'latest', a positive number "
        "or 'N latest', got 'sometimes'"
    ]

"""mirror.yaml: defaults, discovery, and one-line errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypi_simple import PYPI_SIMPLE_ENDPOINT

from gitmirror.sync.config import Config, ConfigError, load

from conftest import Mirror


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mirror.yaml"
    path.write_text(text)
    return path


def test_defaults_when_no_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load(None)
    assert config == Config()
    assert config.upstream == PYPI_SIMPLE_ENDPOINT
    assert config.repo == Path("mirror/repo") and config.store == Path("mirror/store")


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load(write(tmp_path, "repo: r\nstore: /abs/s\nprojects: ['Attrs>=23', 'six']\n"))
    assert config.repo == tmp_path / "r" and config.store == Path("/abs/s")
    assert [selection.name for selection in config.projects] == ["attrs", "six"]
    assert config.projects[0].wants("23.1") and not config.projects[0].wants("22.2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("projets: [a]\n", "unknown key 'projets'"),
        ("projects: attrs\n", "projects must be a list"),
        ("concurrency: many\n", "concurrency must be a positive integer"),
        ("concurrency: 0\n", "concurrency must be a positive integer"),
        ("retries: true\n", "retries must be"),
        ("upstream: ftp://x/\n", "upstream must be an http"),
        ("projects: ['not a requirement!!']\n", "invalid project requirement"),
        ("projects: ['../../etc']\n", "invalid project requirement"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("projects: [a\n", "not valid YAML at line"),
        # review branches obey the hook's ref policy (docs/refs.md): pushable, never shadowing a revision
        ("review: {branch: main}\n", "other than main"),
        ("review: {branch: team/incoming}\n", "one git ref component"),
        ("review: {branch: deadbeef}\n", "looks like a commit id"),
        ("review: {branch: '2026-01-31'}\n", "looks like a date"),
        ("review: {branch: HEAD}\n", "HEAD is reserved"),
        # signing: the checkpoint's name is a signed-note key name
        ("signing: {name: 'a b'}\n", "signing.name must be a name without spaces or '\\+'"),
        ("signing: {name: 7}\n", "signing.name must be a name"),
        ("signing: {require_signed_main: true}\n", "needs signing.allowed_signers"),
        ("signing: {witnesses: witnesses}\n", "signing.witnesses needs signing.cosignatures"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text))


def test_cli_reports_bad_config_in_one_line_and_writes_nothing(mirror: Mirror) -> None:
    (mirror.root / "mirror.yaml").write_text("upstream: http://127.0.0.1:1/simple/\nprojetcs: [x]\n")
    result = mirror.run("sync")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown key 'projetcs'" in result.stderr
    assert not (mirror.root / "mirror").exists()


def test_explicit_config_path(mirror: Mirror, sample, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "conf.yaml").write_text(f"upstream: {mirror.upstream.url}\nprojects: [other-lib]\ndependencies: false\n")
    result = mirror.run("sync", "--config", str(other / "conf.yaml"), check=True)
    assert "2 files added" in result.stdout
    assert (other / "mirror" / "repo" / "HEAD").exists()

"""The core promise end to end: sync from a real HTTP upstream, serve, and install with pip and uv."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from pathlib import Path

import httpx

from conftest import Mirror, isolated_env


def installed_module_sha(venv, module: str) -> str:
    """The sha256 of an installed module's source, to compare with the wheel's member."""
    return venv.run(f"import hashlib, {module} as m; print(hashlib.sha256(open(m.__file__, 'rb').read()).hexdigest())")


def wheel_member_sha(artifact, member: str) -> str:
    with zipfile.ZipFile(io.BytesIO(artifact.data)) as archive:
        return hashlib.sha256(archive.read(member)).hexdigest()


def test_sync_serve_pip_and_uv_install(mirror: Mirror, sample, serve, make_venv, tmp_path: Path) -> None:
    result = mirror.run("sync", check=True)
    assert "8 files added" in result.stdout
    server = serve()

    pip_venv = make_venv("pip")
    installed = pip_venv.pip_install(server.index_url, "demo-pkg==1.0")
    assert installed.returncode == 0, installed.stderr
    assert pip_venv.run("import demo_pkg; print(demo_pkg.__version__)") == "1.0"

    # Unpinned: 1.1 is yanked and 2.0 needs Python >= 3.99, so pip must choose 1.0.
    unpinned = make_venv("pip-unpinned")
    assert unpinned.pip_install(server.index_url, "demo-pkg").returncode == 0
    assert unpinned.run("import demo_pkg; print(demo_pkg.__version__)") == "1.0"

    uv_venv = make_venv("uv")
    installed = uv_venv.uv_install(server.index_url, "other-lib==0.2")
    assert installed.returncode == 0, installed.stderr
    assert uv_venv.run("import other_lib, demo_pkg; print(other_lib.__version__, demo_pkg.__version__)") == "0.2 1.0"

    # The bytes served and installed are the bytes upstream published.
    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.0-py3-none-any.whl")
    body = httpx.get(f"{server.url}/files/demo-pkg/{wheel.filename}").content
    assert hashlib.sha256(body).hexdigest() == wheel.sha256
    downloads = tmp_path / "downloads"
    subprocess.run(
        [
            pip_venv.python,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(downloads),
            "--index-url",
            server.index_url,
            "demo-pkg==1.0",
        ],
        env=isolated_env(),
        check=True,
        capture_output=True,
    )
    assert hashlib.sha256((downloads / wheel.filename).read_bytes()).hexdigest() == wheel.sha256
    expected = wheel_member_sha(wheel, "demo_pkg/__init__.py")
    assert installed_module_sha(pip_venv, "demo_pkg") == expected
    assert installed_module_sha(uv_venv, "demo_pkg") == expected


def test_second_sync_without_changes_makes_no_commit(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    first = mirror.git("rev-parse", "main").strip()
    result = mirror.run("sync", check=True)
    assert "nothing to commit" in result.stdout
    assert mirror.git("rev-parse", "main").strip() == first
    assert mirror.git("rev-list", "--count", "main").strip() == "1"


def test_new_release_commit_only_adds_lines(mirror: Mirror, sample, upstream) -> None:
    from fakeupstream import build_wheel

    mirror.run("sync", check=True)
    upstream.add("demo-pkg", build_wheel("demo-pkg", "1.5", requires_python=">=3.8"))
    mirror.run("sync", check=True)
    stat = mirror.git("diff", "--numstat", "main~1", "main").split()
    assert stat == ["1", "0", "projects/de/mo/demo-pkg.jsonl"]
    diff = mirror.git("diff", "main~1", "main")
    added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert len(added) == 1 and json.loads(added[0][1:])["filename"] == "demo_pkg-1.5-py3-none-any.whl"
    message = mirror.git("log", "-1", "--format=%B", "main")
    assert message.startswith("sync: 1 project, 1 file added")
    assert "demo-pkg: + demo_pkg-1.5-py3-none-any.whl" in message


def test_hash_mismatch_is_rejected_and_nothing_stored(mirror: Mirror, sample, upstream) -> None:
    upstream.fault("demo_pkg-1.0-py3-none-any.whl", "wrong_hash", times=-1)
    result = mirror.run("sync", "demo-pkg")
    assert result.returncode == 1
    assert "demo_pkg-1.0-py3-none-any.whl: rejected, sha256 mismatch" in result.stderr
    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.0-py3-none-any.whl")
    blobs = {path.name for path in (mirror.store / "blobs").glob("*/*/*")}
    # every other file and its PEP 658 file, not this one
    others = [artifact for artifact in sample["demo-pkg"] if artifact is not wheel]
    assert blobs == {artifact.sha256 for artifact in others} | ({a.metadata_sha256 for a in others} - {None})
    manifest = mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl")
    assert "demo_pkg-1.0-py3-none-any.whl" not in manifest  # but the lying entry is never recorded
    assert "demo_pkg-1.1-py3-none-any.whl" in manifest  # and the rest of the project still syncs
    assert not list((mirror.store / "tmp").iterdir())


def test_store_is_content_addressed_and_read_only(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    for path in (mirror.store / "blobs").glob("*/*/*"):
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == path.name
        assert path.parent.name == path.name[2:4] and path.parent.parent.name == path.name[:2]
        assert not path.stat().st_mode & 0o222


def test_init_is_idempotent(mirror: Mirror) -> None:
    assert mirror.run("init").returncode == 0
    assert mirror.run("init").returncode == 0
    assert (mirror.repo / "HEAD").read_text().strip() == "ref: refs/heads/main"
    assert Path(mirror.store / "blobs").is_dir()


def test_html_only_upstream_gives_the_same_manifest(mirror: Mirror, sample, upstream, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    json_manifest = mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl")
    upstream.html_only = True
    other = Mirror(root=tmp_path / "html", upstream=upstream)
    other.root.mkdir()
    other.configure("projects: [demo-pkg]\n")
    other.run("sync", check=True)
    html_manifest = other.git("show", "main:projects/de/mo/demo-pkg.jsonl")
    assert any("text/html" in r.headers.get("Accept", "") for r in upstream.requests)

    def facts(text: str) -> list[tuple]:
        rows = [json.loads(line) for line in text.splitlines()[1:]]
        return [
            (r["filename"], r["sha256"], r["size"], r["requires-python"], r["yanked"], r["core-metadata"]) for r in rows
        ]

    # HTML carries no sizes or upload times (PEP 700 is JSON-only): sizes come from the stored bytes.
    assert facts(html_manifest) == facts(json_manifest)

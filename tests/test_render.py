"""Static rendering: a directory any web server can serve as a full mirror, and a pages branch."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import Mirror, free_port, isolated_env, wait_until_answering
from fakeupstream import build_wheel

NEW_WHEEL = "demo_pkg-1.5-py3-none-any.whl"
OLD_WHEEL = "demo_pkg-1.0-py3-none-any.whl"


@contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """``python -m http.server`` over ``directory``: no gitmirror process involved."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory), str(port)],
        env=isolated_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url + "/", process, "http.server")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file of a rendered site (links followed), for byte-for-byte comparisons."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != ".gitmirror-render.json"
    }


def test_render_serves_a_site_pip_installs_from(mirror: Mirror, sample, make_venv, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    site = mirror.root / "static"
    result = mirror.run("render", "--out", str(site), check=True)
    assert "full" in result.stdout and "2 projects, 2 re-rendered" in result.stdout

    for page in ("simple/index.html", "simple/index.json", "simple/demo-pkg/index.html", "simple/demo-pkg/index.json"):
        assert (site / page).is_file(), page
    root = json.loads((site / "simple/index.json").read_text())
    assert [project["name"] for project in root["projects"]] == ["demo-pkg", "other-lib"]
    page = json.loads((site / "simple/demo-pkg/index.json").read_text())
    wheel = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == OLD_WHEEL)
    entry = next(item for item in page["files"] if item["filename"] == OLD_WHEEL)
    assert entry["url"] == f"../../files/demo-pkg/{OLD_WHEEL}" and entry["hashes"]["sha256"] == wheel.sha256
    link = site / "files" / "demo-pkg" / OLD_WHEEL
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == (mirror.store / "blobs" / wheel.sha256[:2] / wheel.sha256[2:4] / wheel.sha256).resolve()
    assert hashlib.sha256((site / "files/demo-pkg" / (OLD_WHEEL + ".metadata")).read_bytes()).hexdigest() == (
        wheel.metadata_sha256
    )

    with static_server(site) as url:
        assert httpx.get(f"{url}/files/demo-pkg/{OLD_WHEEL}").content == wheel.data
        venv = make_venv("static")
        installed = venv.pip_install(f"{url}/simple/", "other-lib")
        assert installed.returncode == 0, installed.stderr
        assert venv.run("import other_lib, demo_pkg; print(other_lib.__version__, demo_pkg.__version__)") == "0.2 1.0"


def test_render_is_incremental_and_deterministic(mirror: Mirror, sample, upstream, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    first = mirror.git("rev-parse", "main").strip()
    site = tmp_path / "static"
    mirror.run("render", "--out", str(site), check=True)
    untouched = site / "simple/other-lib/index.html"
    before = untouched.stat().st_mtime_ns, untouched.stat().st_ino

    again = mirror.run("render", "--out", str(site), check=True)
    assert "incremental" in again.stdout and "0 re-rendered" in again.stdout and "0 pages" in again.stdout

    upstream.add("demo-pkg", build_wheel("demo-pkg", "1.5", requires_python=">=3.8"))
    upstream.yank("demo-pkg", OLD_WHEEL, "bad")
    mirror.run("sync", check=True)
    updated = mirror.run("render", "--out", str(site), check=True)
    assert "incremental" in updated.stdout and "2 projects, 1 re-rendered" in updated.stdout
    assert (untouched.stat().st_mtime_ns, untouched.stat().st_ino) == before
    page = json.loads((site / "simple/demo-pkg/index.json").read_text())
    assert NEW_WHEEL in {item["filename"] for item in page["files"]}
    assert (site / "files/demo-pkg" / NEW_WHEEL).is_file()

    # Deterministic: a fresh full render of the same commit has the same bytes.
    fresh = tmp_path / "fresh"
    mirror.run("render", "--out", str(fresh), "--full", check=True)
    assert tree_bytes(fresh) == tree_bytes(site)

    # Back in time in the same directory: later files disappear again, the yank too.
    mirror.run("render", "--out", str(site), "--rev", first[:9], check=True)
    old_page = json.loads((site / "simple/demo-pkg/index.json").read_text())
    assert NEW_WHEEL not in {item["filename"] for item in old_page["files"]}
    assert next(item for item in old_page["files"] if item["filename"] == OLD_WHEEL)["yanked"] is False
    assert not os.path.lexists(site / "files/demo-pkg" / NEW_WHEEL)
    old_fresh = tmp_path / "old-fresh"
    mirror.run("render", "--out", str(old_fresh), "--rev", first, check=True)
    assert tree_bytes(old_fresh) == tree_bytes(site)


def test_render_copy_mode_and_missing_blobs(mirror: Mirror, sample, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    wheel = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == OLD_WHEEL)
    blob = mirror.store / "blobs" / wheel.sha256[:2] / wheel.sha256[2:4] / wheel.sha256
    kept = tmp_path / "kept-blob"
    shutil.copyfile(blob, kept)
    blob.unlink()

    site = tmp_path / "static"
    result = mirror.run("render", "--out", str(site), "--files", "copy")
    assert result.returncode == 1
    assert f"missing blob: demo-pkg/{OLD_WHEEL}\n" in result.stderr
    # its PEP 658 file is a blob of its own: still there
    assert f"missing blob: demo-pkg/{OLD_WHEEL}.metadata\n" not in result.stderr
    assert "1 blobs missing from the store" in result.stdout
    assert not os.path.lexists(site / "files/demo-pkg" / OLD_WHEEL)
    assert (site / "simple/demo-pkg/index.html").is_file()  # the pages are still written
    copied = site / "files/demo-pkg/demo_pkg-1.1-py3-none-any.whl"
    assert copied.is_file() and not copied.is_symlink()

    shutil.copyfile(kept, blob)  # the blob comes back (as `hydrate` would bring it)
    healed = mirror.run("render", "--out", str(site), "--files", "copy", check=True)
    assert "incremental" in healed.stdout and "1 re-rendered" in healed.stdout
    assert (site / "files/demo-pkg" / OLD_WHEEL).read_bytes() == wheel.data
    assert (site / "files/demo-pkg" / f"{OLD_WHEEL}.metadata").read_bytes() == wheel.metadata


def test_render_bad_input_is_one_line(mirror: Mirror, sample, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    cases = {
        ("render",): "give --out DIR, --branch NAME, or both",
        ("render", "--out", str(tmp_path / "x"), "--files", "magic"): "--files must be one of",
        ("render", "--out", str(tmp_path / "x"), "--rev", "nope"): "unknown revision 'nope'",
        ("render", "--out", str(tmp_path / "x"), "--base-url", "ftp://x/"): "--base-url must be",
        ("render", "--branch", "main"): "refusing to render pages onto branch main",
    }
    for args, message in cases.items():
        result = mirror.run(*args)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, (args, result.stderr)
    (tmp_path / "file").write_text("")
    assert mirror.run("render", "--out", str(tmp_path / "file")).returncode == 2
    assert mirror.git("rev-list", "--count", "main").strip() == "1"


def test_pages_branch_with_files_elsewhere(mirror: Mirror, sample, upstream, serve, make_venv, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    server = serve()  # serves the files; the pages come from the branch
    made = mirror.run("render", "--branch", "pages", "--base-url", server.url, check=True)
    assert "branch pages: 2 projects re-rendered, commit" in made.stdout
    listing = mirror.git("ls-tree", "-r", "--name-only", "pages").split()
    assert "simple/index.html" in listing and "simple/demo-pkg/index.json" in listing
    assert not any(path.startswith("files/") for path in listing)
    assert mirror.run("render", "--branch", "pages", "--base-url", server.url, check=True).stdout.endswith(
        "already up to date\n"
    )
    upstream.add("other_lib", build_wheel("other_lib", "0.3", requires_python=">=3.8"))
    mirror.run("sync", check=True)
    incremental = mirror.run("render", "--branch", "pages", "--base-url", server.url, check=True)
    assert "1 projects re-rendered" in incremental.stdout
    assert mirror.git("diff", "--name-only", "pages~1", "pages").split() == [
        ".gitmirror-render.json",
        "simple/other-lib/index.html",
        "simple/other-lib/index.json",
    ]
    assert mirror.git("rev-list", "--count", "main").strip() == "2"  # main is untouched by rendering

    checkout = tmp_path / "pages-checkout"
    checkout.mkdir()
    archive = subprocess.run(
        ["git", "--git-dir", str(mirror.repo), "archive", "--format=tar", "pages"],
        env=isolated_env(),
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(checkout, filter="data")
    html = (checkout / "simple/demo-pkg/index.html").read_text()
    assert f'href="{server.url}/files/demo-pkg/{OLD_WHEEL}#sha256=' in html
    with static_server(checkout) as url:
        venv = make_venv("pages")
        installed = venv.pip_install(f"{url}/simple/", "other-lib==0.3")
        assert installed.returncode == 0, installed.stderr
        assert venv.run("import other_lib; print(other_lib.__version__)") == "0.3"


NGINX_MAIN = """
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
{http}
}}
"""
NGINX_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        root {site};
{locations}
    }}
"""


def readme_nginx_config() -> tuple[str, str]:
    """The sample nginx config from docs/snapshots.md: (http-level part, server-level part)."""
    page = (Path(__file__).parent.parent / "docs" / "snapshots.md").read_text()
    block = page.split("```nginx\n", 1)[1].split("```", 1)[0]
    http_part, server_part = block.split("server {", 1)
    server_part = server_part.rsplit("}", 1)[0]
    locations = "\n".join(
        line for line in server_part.splitlines() if not line.strip().startswith(("listen", "root", "server_name"))
    )
    return http_part, locations


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_readme_nginx_config_chooses_json_or_html(mirror: Mirror, sample, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    site = tmp_path / "static"
    mirror.run("render", "--out", str(site), check=True)
    nginx_root = tmp_path / "nginx"
    (nginx_root / "tmp").mkdir(parents=True)
    port = free_port()
    http_part, locations = readme_nginx_config()
    conf = nginx_root / "nginx.conf"
    conf.write_text(
        NGINX_MAIN.format(
            root=nginx_root, http=http_part + NGINX_SERVER.format(port=port, site=site, locations=locations)
        ).replace("/srv/mirror/site", str(site))
    )
    process = subprocess.Popen(["nginx", "-p", str(nginx_root), "-c", str(conf)], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url + "/simple/", process, "nginx")
        as_json = httpx.get(f"{url}/simple/demo-pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        assert as_json.headers["content-type"].startswith("application/vnd.pypi.simple.v1+json")
        assert as_json.json()["name"] == "demo-pkg"
        latest = httpx.get(f"{url}/simple/demo-pkg/", headers={"Accept": "application/vnd.pypi.simple.latest+json"})
        assert latest.headers["content-type"].startswith("application/vnd.pypi.simple.v1+json")
        as_html = httpx.get(f"{url}/simple/demo-pkg/", headers={"Accept": "text/html"})
        assert as_html.headers["content-type"].startswith("text/html") and "<a href=" in as_html.text
        assert "Accept" in as_html.headers.get("vary", "")
        refuses_json = httpx.get(f"{url}/simple/", headers={"Accept": "application/vnd.pypi.simple.v1+json;q=0, */*"})
        assert refuses_json.headers["content-type"].startswith("text/html")
        pip_like = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
        assert httpx.get(f"{url}/simple/", headers={"Accept": pip_like}).json()["projects"][0]["name"] == "demo-pkg"
        wheel = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == OLD_WHEEL)
        served = httpx.get(f"{url}/files/demo-pkg/{OLD_WHEEL}")
        assert served.content == wheel.data and "immutable" in served.headers["cache-control"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_an_incremental_render_moves_the_project_list_with_the_diff(mirror: Mirror, sample, tmp_path: Path) -> None:
    mirror.configure("projects:\n  - demo-pkg\ndependencies: false\n")
    mirror.run("sync", check=True)
    first = mirror.git("rev-parse", "main").strip()
    site = tmp_path / "static"
    mirror.run("render", "--out", str(site), check=True)
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n")
    mirror.run("sync", check=True)
    added = mirror.run("render", "--out", str(site), check=True)
    assert "incremental" in added.stdout and "2 projects, 1 re-rendered" in added.stdout
    root = json.loads((site / "simple/index.json").read_text())
    assert [project["name"] for project in root["projects"]] == ["demo-pkg", "other-lib"]
    fresh = tmp_path / "fresh"
    mirror.run("render", "--out", str(fresh), "--full", check=True)
    assert tree_bytes(fresh) == tree_bytes(site)
    removed = mirror.run("render", "--out", str(site), "--rev", first, check=True)
    assert "1 projects, 0 re-rendered, 1 removed" in removed.stdout
    assert "other-lib" not in (site / "simple/index.html").read_text()


def site_listing(root: Path) -> dict[str, bytes | str]:
    """Every page's bytes and every file link's target (as ``link:<target>``), state file aside."""
    return {
        str(path.relative_to(root)): f"link:{os.readlink(path)}" if path.is_symlink() else path.read_bytes()
        for path in sorted(root.rglob("*"))
        if (path.is_file() or path.is_symlink()) and path.name != ".gitmirror-render.json"
    }


def test_a_render_in_several_processes_writes_what_one_process_writes(
    mirror: Mirror, sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitmirror.serve import site_writer
    from gitmirror.serve.render import render_site
    from gitmirror.storage.repo import MetadataRepo
    from gitmirror.storage.store import BlobStore

    mirror.run("sync", check=True)
    repo, store = MetadataRepo(mirror.repo), BlobStore(mirror.store)
    commit = repo.tip("main")
    assert commit is not None
    alone = render_site(repo, store, commit, tmp_path / "alone")
    monkeypatch.setattr(site_writer, "IN_PROCESSES_FROM", 1)
    monkeypatch.setattr(site_writer, "CHUNK", 1)  # one project per task: every process writes some
    monkeypatch.setattr(site_writer.os, "cpu_count", lambda: 2)
    pools: list[int] = []

    class CountedPool(site_writer.ProcessPoolExecutor):
        def __init__(self, processes: int, *args: object, **kwargs: object) -> None:
            pools.append(processes)
            super().__init__(processes, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(site_writer, "ProcessPoolExecutor", CountedPool)
    shared = render_site(repo, store, commit, tmp_path / "shared")
    assert (shared.rendered, shared.pages_written, shared.links_written, shared.missing) == (
        alone.rendered,
        alone.pages_written,
        alone.links_written,
        alone.missing,
    )
    assert pools == [2] and site_listing(tmp_path / "shared") == site_listing(tmp_path / "alone") != {}
    store.remove(sample["demo-pkg"][0].sha256)  # a blob gone: each process reports the files it could not link
    again = render_site(repo, store, commit, tmp_path / "shared", full=True)
    assert again.missing == [f"demo-pkg/{sample['demo-pkg'][0].filename}"] and again.pages_written == 0
    assert json.loads((tmp_path / "shared" / ".gitmirror-render.json").read_text())["incomplete"] == ["demo-pkg"]

"""The deployment files in contrib/: systemd units that ``systemd-analyze verify`` accepts, and the
nginx front that serves a render's index and files and passes the rest to ``gitmirror serve``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_render import NGINX_MAIN

from conftest import Mirror, free_port, wait_until_answering

CONTRIB = Path(__file__).parent.parent / "contrib"
UNITS = ("gitmirror-serve.service", "gitmirror-sync.service", "gitmirror-sync.timer")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (package systemd)")
def test_systemd_units_verify(tmp_path: Path) -> None:
    executable = Path(sys.executable).parent / "gitmirror"  # this virtualenv's command stands for /opt/gitmirror's
    for unit in UNITS:
        text = (CONTRIB / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/opt/gitmirror/bin/gitmirror", str(executable)))
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / unit) for unit in UNITS)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    timer = (CONTRIB / "systemd" / "gitmirror-sync.timer").read_text()
    assert "OnCalendar=" in timer and "Persistent=true" in timer


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_front_serves_the_render_and_passes_pages_to_serve(
    mirror: Mirror, sample: dict, serve, tmp_path: Path
) -> None:
    mirror.run("sync", check=True)
    site = tmp_path / "site"
    mirror.run("render", "--out", str(site), check=True)
    server = serve()
    root = tmp_path / "nginx"
    (root / "tmp").mkdir(parents=True)
    port = free_port()
    conf = (CONTRIB / "nginx" / "gitmirror.conf").read_text()
    conf = (
        conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
        .replace("/srv/mirror/site", str(site))
        .replace("127.0.0.1:8080", server.url.removeprefix("http://"))
    )
    (root / "gitmirror.conf").write_text(conf)
    (root / "nginx.conf").write_text(NGINX_MAIN.format(root=root, http=f"    include {root / 'gitmirror.conf'};"))
    process = subprocess.Popen(["nginx", "-p", str(root), "-c", str(root / "nginx.conf")], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url + "/health", process, "nginx")
        index = httpx.get(f"{url}/simple/demo-pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        assert index.json()["name"] == "demo-pkg" and "uvicorn" not in index.headers.get("server", "")
        wheel = sample["demo-pkg"][0]
        assert httpx.get(f"{url}/files/demo-pkg/{wheel.filename}").content == wheel.data
        home = httpx.get(url + "/")
        assert home.status_code == 200 and "A mirror of" in home.text and f"{url}/simple/" in home.text
        assert httpx.get(url + "/health/ready").text == "ready\n"
        assert httpx.get(url + "/project/demo-pkg/history/").status_code == 200
        assert httpx.get(url + "/metrics").status_code == 200  # from 127.0.0.1: allowed
    finally:
        process.terminate()
        process.wait(timeout=10)

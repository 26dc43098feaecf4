"""The web pages in a real browser: headless Chromium (Debian's package) loads the home page, submits
its search form, opens a result and that project's history link from ``gitmirror serve``; each page
is screenshotted into the test's tmp dir and its DOM read.

Driven through the browser's own command line (``--dump-dom``, ``--screenshot``), no JavaScript and no
browser download. Skipped only where no ``chromium`` is installed (CI installs it, see ``.ci/run``).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pytest

from conftest import Mirror, isolated_env

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="needs the chromium package (apt-get install chromium)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PHONE, DESKTOP = "390,844", "1280,900"


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless run with a fresh profile, nothing fetched but the page (no updates, no sync)."""
    assert BROWSER is not None
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, env=isolated_env(), check=True)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def visit(profile: Path, url: str, shot: Path, window: str) -> str:
    """The DOM Chromium builds for ``url``, and a screenshot of it at ``window`` (width,height) in ``shot``."""
    dom = chromium(profile, "--dump-dom", url).stdout
    assert "<script" not in dom
    chromium(profile, f"--screenshot={shot}", f"--window-size={window}", "--hide-scrollbars", url)
    assert shot.stat().st_size > 5000  # a page, not a blank
    assert png_size(shot) == tuple(int(side) for side in window.split(","))
    return dom


def test_chromium_searches_and_opens_a_project_and_its_history(
    mirror: Mirror, sample: dict, serve, tmp_path: Path
) -> None:
    """From the home page, as a person goes: the search form, a result, the project, its history link."""
    mirror.run("sync", check=True)
    base = serve().url
    profile = tmp_path / "profile"
    home = visit(profile, base + "/", tmp_path / "home.png", DESKTOP)
    assert "A mirror of" in home and "Recent changes" in home
    form = re.search(r'<form class="search" role="search" action="([^"]+)" method="get">(.*?)</form>', home, re.S)
    assert form is not None and re.search(r'<label for="q">', form[2])
    field = re.search(r'<input id="q" name="(\w+)" type="search"', form[2])
    assert field is not None
    search = visit(profile, f"{base}{form[1]}?{urlencode({field[1]: 'LIB'})}", tmp_path / "search.png", PHONE)
    assert "Projects matching" in search
    result = re.search(r'<ul class="results">\s*<li><a href="(/project/[^"]+/)">other-lib</a>', search)
    assert result is not None, search
    project = visit(profile, base + result[1], tmp_path / "project.png", PHONE)
    assert "pip install --index-url" in project and "demo-pkg&gt;=1.0" in project and "0.2" in project
    history_link = re.search(r'<a href="(/project/other-lib/history/)">History</a>', project)
    assert history_link is not None
    history = visit(profile, base + history_link[1], tmp_path / "history.png", DESKTOP)
    assert "first seen: other_lib-0.2-py3-none-any.whl" in history
    assert sorted(path.name for path in tmp_path.glob("*.png")) == [
        "history.png",
        "home.png",
        "project.png",
        "search.png",
    ]


def test_chromium_shows_a_yank_reason_and_requires_python_on_a_phone(
    mirror: Mirror, sample: dict, serve, tmp_path: Path
) -> None:
    mirror.run("sync", check=True)
    project = visit(tmp_path / "profile", serve().url + "/project/demo-pkg/", tmp_path / "demo.png", PHONE)
    for text in ("pip install --index-url", "broken build", "2.0", "&gt;=3.99"):
        assert text in project

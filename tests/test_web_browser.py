"""The web pages in a real browser: headless Chromium (Debian's package) loads the home page, a
search, a project and its history from ``gitmirror serve``; each is screenshotted and its DOM read.

Driven through the browser's own command line (``--dump-dom``, ``--screenshot``), no JavaScript and no
browser download. Skipped only where no ``chromium`` is installed (CI installs it, see ``.ci/run``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

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


@pytest.mark.parametrize(
    ("page", "path", "expected", "window"),
    [
        ("home", "/", ["A mirror of", "Recent changes", "demo-pkg"], DESKTOP),
        ("search", "/search/?q=lib", ['href="/project/other-lib/"', "Projects matching"], PHONE),
        ("project", "/project/demo-pkg/", ["pip install --index-url", "broken build", "2.0", "&gt;=3.99"], PHONE),
        ("history", "/project/demo-pkg/history/", ["first seen: demo_pkg-1.0-py3-none-any.whl"], DESKTOP),
    ],
)
def test_chromium_renders_the_pages(
    page: str, path: str, expected: list[str], window: str, mirror: Mirror, sample: dict, serve, tmp_path: Path
) -> None:
    mirror.run("sync", check=True)
    url = serve().url + path
    profile = tmp_path / "profile"
    dom = chromium(profile, "--dump-dom", url).stdout
    for text in expected:
        assert text in dom, f"{page}: {text!r} missing from the DOM"
    assert "<script" not in dom
    shot = tmp_path / f"{page}.png"
    chromium(profile, f"--screenshot={shot}", f"--window-size={window}", "--hide-scrollbars", url)
    assert shot.stat().st_size > 5000  # a page, not a blank
    assert png_size(shot) == tuple(int(side) for side in window.split(","))

"""Serve: requests/s and p50/p99 latency of ``gitmirror serve`` vs nginx over a static site vs pypiserver.

Same projects, same files, same load generator (``wrk``, or an async httpx client when wrk is
absent), same duration, loopback only. The load generator gets one thread so the server has the
other core; nginx runs one worker for the same reason (``gitmirror serve`` is one process).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import GITMIRROR, Row, Table, free_port, missing, nginx_running, peer, quiet_env, remove_tree, running

from gitmirror.serve import index
from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.store import BlobStore

HTML = "text/html"
JSON = index.JSON_TYPE
CONNECTIONS = 32
HELD_CONNECTIONS = 1000


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass(frozen=True)
class Target:
    label: str
    path: str
    accept: str | None


# -- load generation ---------------------------------------------------------------------------


def _ms(text: str) -> float:
    """wrk's latency (``812.00us``, ``1.20ms``, ``2.00s``, ``1.00m``) in ms; NaN when it printed none."""
    found = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    if not found:
        return float("nan")
    value, unit = found.groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def wrk(url: str, seconds: float, accept: str | None, connections: int = CONNECTIONS, threads: int = 1) -> Load:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s", "--latency"]
    if accept:
        command += ["-H", f"Accept: {accept}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    if "Requests/sec" not in output or "50%" not in output:
        raise RuntimeError(f"wrk printed no result for {url}: {output[-300:]}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    # the distribution's own lines: "87.50%" in the thread stats above them also ends in "50%"
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Load(rps, p50, p99, requests, errors + (int(non_2xx.group(1)) if non_2xx else 0))


def httpx_load(url: str, seconds: float, accept: str | None, connections: int = CONNECTIONS) -> Load:
    """The fallback generator: ``connections`` keep-alive clients, each looping until the deadline."""

    async def main() -> Load:
        latencies: list[float] = []
        errors = 0
        headers = {"Accept": accept} if accept else {}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=10, trust_env=False) as client:
            end = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal errors
                while (start := time.perf_counter()) < end:
                    try:
                        response = await client.get(url, headers=headers)
                        await response.aread()
                        if response.status_code >= 400:
                            errors += 1
                    except httpx.HTTPError:
                        errors += 1
                    latencies.append((time.perf_counter() - start) * 1000)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - began
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
        return Load(len(latencies) / elapsed, cuts[49], cuts[98], len(latencies), errors)

    return asyncio.run(main())


def measure(url: str, seconds: float, accept: str | None, connections: int = CONNECTIONS) -> Load:
    if shutil.which("wrk"):
        return wrk(url, seconds, accept, connections)
    return httpx_load(url, seconds, accept, connections)


# -- the contestants ---------------------------------------------------------------------------


def render_static(mirror_dir: Path, out: Path) -> tuple[int, str]:
    """The static site nginx serves: ``gitmirror render`` when the CLI has it, else the same layout here.

    The fallback writes pages with gitmirror.serve.index and files as symlinks into the blob store.
    """
    remove_tree(out)
    command = [*GITMIRROR, "render", "--out", str(out), "--full", "--config", str(mirror_dir / "mirror.yaml")]
    if subprocess.run(command, cwd=mirror_dir, capture_output=True, env=quiet_env(), timeout=600).returncode == 0:
        return len(list((out / "simple").iterdir())) - 2, "`gitmirror render --out DIR --full` (symlinked files)"
    remove_tree(out)
    repo = MetadataRepo(mirror_dir / "repo")
    store = BlobStore(mirror_dir / "store")
    tip = repo.tip()
    names = repo.projects(tip)
    (out / "simple").mkdir(parents=True)
    (out / "simple" / "index.html").write_bytes(index.root_html(names))
    (out / "simple" / "index.json").write_bytes(index.root_json(names))
    for manifest in repo.manifests(tip):
        page_dir = out / "simple" / manifest.name
        page_dir.mkdir()
        (page_dir / "index.html").write_bytes(index.project_html(manifest))
        (page_dir / "index.json").write_bytes(index.project_json(manifest))
        files_dir = out / "files" / manifest.name
        files_dir.mkdir(parents=True)
        for entry in manifest.served_files():
            os.symlink(store.path(entry.sha256), files_dir / entry.filename)
            if entry.core_metadata:
                os.symlink(store.path(entry.core_metadata), files_dir / (entry.filename + ".metadata"))
    repo.close()
    return len(names), "the bench's own render with gitmirror.serve.index (no `gitmirror render` in the CLI)"


SITE_SERVER = """
    map $http_accept $simple_page {{
        default index.html;
        "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {site};
        location /simple/ {{
            types {{ text/html html; application/vnd.pypi.simple.v1+json json; }}
            add_header Vary Accept;
            try_files $uri$simple_page =404;
        }}
        location /files/ {{ types {{ }} default_type application/octet-stream; }}
    }}
"""


@contextmanager
def nginx(site: Path, workdir: Path) -> Iterator[str]:
    port = free_port()
    with nginx_running(workdir / "nginx", port, SITE_SERVER.format(port=port, site=site), "/simple/") as (url, _):
        yield url


@contextmanager
def gitmirror_serve(mirror_dir: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*GITMIRROR, "serve", "--port", str(port), "--config", str(mirror_dir / "mirror.yaml")]
    with running(command, url + "/simple/", cwd=mirror_dir):
        yield url


@contextmanager
def pypiserver(mirror_dir: Path, workdir: Path) -> Iterator[str]:
    """pypiserver over a flat directory of the same files (hard links into the blob store)."""
    flat = workdir / "pypiserver-packages"
    remove_tree(flat)
    flat.mkdir()
    repo = MetadataRepo(mirror_dir / "repo")
    store = BlobStore(mirror_dir / "store")
    for manifest in repo.manifests(repo.tip()):
        for entry in manifest.served_files():
            os.link(store.path(entry.sha256), flat / entry.filename)
    repo.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        peer("pypi-server") or "pypi-server",
        "run",
        "-p",
        str(port),
        "-i",
        "127.0.0.1",
        "-a",
        ".",
        "-P",
        ".",
        "--disable-fallback",
        "--log-stream",
        "none",
        str(flat),
    ]
    with running(command, url + "/simple/"):
        yield url


# -- the stage ---------------------------------------------------------------------------------


def _targets(project: str, one_mb_project: str, one_mb_file: str, files_prefix: str) -> list[Target]:
    return [
        Target("GET /simple/<project>/ HTML", f"/simple/{project}/", HTML),
        Target("GET /simple/<project>/ JSON", f"/simple/{project}/", JSON),
        Target(
            "GET 1 MiB file",
            f"{files_prefix}{one_mb_project}/{one_mb_file}"
            if files_prefix == "/files/"
            else f"{files_prefix}{one_mb_file}",
            None,
        ),
    ]


def _serves(url: str, target: Target) -> bool:
    """Whether a server answers this target as asked (pypiserver has no PEP 691 JSON, for instance)."""
    headers = {"Accept": target.accept} if target.accept else {}
    response = httpx.get(url + target.path, headers=headers, timeout=10, trust_env=False, follow_redirects=False)
    if response.status_code != 200:
        return False
    return target.accept != JSON or response.headers.get("content-type", "").startswith(JSON)


def _run_one(url: str, target: Target, seconds: float) -> Load | None:
    return measure(url + target.path, seconds, target.accept) if _serves(url, target) else None


def _run_all(url: str, targets: list[Target], seconds: float) -> dict[str, Load | None]:
    return {target.label: _run_one(url, target, seconds) for target in targets}


def run(mirror_dir: Path, workdir: Path, quick: bool, one_mb: tuple[str, str]) -> Table:
    seconds = 2 if quick else 10
    project = "bench-0001"
    table = Table(
        f"Serve: {seconds} s per case, {CONNECTIONS} connections, "
        f"{'wrk -t1' if shutil.which('wrk') else 'async httpx client (wrk not installed)'}"
    )
    if not shutil.which("wrk"):
        table.notes.append(missing("wrk"))
    one_mb_project, one_mb_file = one_mb
    ours_targets = _targets(project, one_mb_project, one_mb_file, "/files/")
    peers: dict[str, dict[str, Load | None]] = {}
    site_url = None
    with ExitStack() as servers:
        url = servers.enter_context(gitmirror_serve(mirror_dir))
        if peer("nginx"):
            site = workdir / "static-site"
            count, how = render_static(mirror_dir, site)
            table.notes.append(
                f"nginx serves a static site of {count} projects rendered by {how}; 1 worker "
                "process, sendfile on, access log off, JSON or HTML chosen from Accept; each case "
                "measured on gitmirror, then at once on nginx (a slow minute falls on both)"
            )
            site_url = servers.enter_context(nginx(site, workdir))
        else:
            table.notes.append(missing("nginx"))
        ours, on_site = {}, {}
        for target in ours_targets:
            ours[target.label] = _run_one(url, target, seconds)
            if site_url:
                on_site[target.label] = _run_one(site_url, target, seconds)
        if site_url:
            peers["nginx (static site)"] = on_site
        held_seconds = 2 if quick else 8
        if shutil.which("wrk"):
            held = wrk(url + f"/simple/{project}/", held_seconds, HTML, connections=HELD_CONNECTIONS, threads=2)
        else:
            held = httpx_load(url + f"/simple/{project}/", held_seconds, HTML, connections=HELD_CONNECTIONS)
    if peer("pypi-server"):
        with pypiserver(mirror_dir, workdir) as url:
            peers["pypiserver"] = _run_all(url, _targets(project, one_mb_project, one_mb_file, "/packages/"), seconds)
    else:
        table.notes.append(missing("pypi-server"))
    for name, loads in peers.items():
        for target in ours_targets:
            theirs, mine = loads.get(target.label), ours.get(target.label)
            note = "target ratio >= 0.4 (issue 25)" if name.startswith("nginx") and "simple" in target.label else ""
            if theirs is None:
                note = "peer does not serve this"
            table.rows.append(
                Row(
                    f"{target.label} req/s",
                    name,
                    theirs and theirs.rps,
                    mine and mine.rps,
                    "req/s",
                    lower_is_better=False,
                    note=note,
                )
            )
            table.rows.append(Row(f"{target.label} p50", name, theirs and theirs.p50_ms, mine and mine.p50_ms, "ms"))
            table.rows.append(Row(f"{target.label} p99", name, theirs and theirs.p99_ms, mine and mine.p99_ms, "ms"))
    if not peers:
        for target in ours_targets:
            mine = ours.get(target.label)
            table.rows.append(
                Row(
                    f"{target.label} req/s",
                    "(no peer installed)",
                    None,
                    mine and mine.rps,
                    "req/s",
                    lower_is_better=False,
                )
            )
    table.notes.append(
        f"{HELD_CONNECTIONS} concurrent connections held against `gitmirror serve` for {held_seconds} s: "
        f"{held.requests} requests answered, {held.errors} failed (socket errors + non-2xx), "
        f"{held.rps:,.0f} req/s, p99 {held.p99_ms:.0f} ms"
    )
    errors = {label: load.errors for label, load in ours.items() if load and load.errors}
    if errors:
        table.notes.append(f"gitmirror serve errors under load: {errors}")
    return table

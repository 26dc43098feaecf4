"""Proxy: ``uv pip install`` of a 30-project closure through the pull-through proxy.

Warm (every file already recorded) against the same install from the rendered static site under
nginx; cold (a fresh mirror: every page and file pulled through) against installing straight from
the same upstream; proxpi (from the peers venv) cold and warm over the same upstream. Rounds
alternate, medians are compared.

    python bench/proxy.py [--rounds 3] [--workdir /tmp/gitmirror-bench/proxy]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import (
    GITMIRROR,
    PEERS_VENV,
    REPO_ROOT,
    Row,
    Table,
    free_port,
    missing,
    peer,
    quiet_env,
    remove_tree,
    running,
    timed,
)
from serve_bench import gitmirror_serve, nginx, render_static

sys.path.insert(0, str(REPO_ROOT / "tests"))
from fakeupstream import FakeUpstream, build_wheel  # noqa: E402

PROJECTS = 30
PAYLOAD_BYTES = 200_000
ROOT = "bench-root"


def publish(upstream: FakeUpstream) -> None:
    """One root project requiring 29 others, two releases each (the resolver picks the newer)."""
    deps = [f"bench-dep-{number:02d}" for number in range(1, PROJECTS)]
    for version in ("1.0", "1.1"):
        upstream.add(ROOT, build_wheel(ROOT, version, requires_dist=deps, payload_size=PAYLOAD_BYTES))
        for dep in deps:
            upstream.add(dep, build_wheel(dep, version, payload_size=PAYLOAD_BYTES))


def uv() -> str:
    local = Path(sys.executable).parent / "uv"
    return str(local) if local.exists() else "uv"


def install(index_url: str, venv: Path) -> float:
    """Seconds of one ``uv pip install`` of the closure into a fresh venv, without uv's cache."""
    remove_tree(venv)
    env = quiet_env(UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never")
    subprocess.run([uv(), "venv", "--python", sys.executable, str(venv)], env=env, capture_output=True, check=True)
    command = [uv(), "pip", "install", "--no-cache", "--python", str(venv / "bin" / "python")]
    return timed([*command, "--index-url", index_url, ROOT], env=env)


def new_mirror(path: Path, upstream_url: str) -> Path:
    remove_tree(path)
    path.mkdir(parents=True)
    (path / "mirror.yaml").write_text(
        f"upstream: {upstream_url}\nrepo: repo\nstore: store\nproxy:\n  commit_interval: 5\n"
    )
    subprocess.run([*GITMIRROR, "init"], cwd=path, env=quiet_env(), capture_output=True, check=True)
    return path


@contextmanager
def proxpi(upstream_url: str, cache: Path) -> Iterator[str]:
    """proxpi (Flask's threaded server, as its README runs it) over the same upstream, caching in ``cache``."""
    remove_tree(cache)
    port = free_port()
    flask = str(PEERS_VENV / "bin" / "flask")
    env = quiet_env(PROXPI_INDEX_URL=upstream_url, PROXPI_CACHE_DIR=str(cache), PROXPI_LOGGING_LEVEL="WARNING")
    command = [flask, "--app", "proxpi.server", "run", "--port", str(port), "--with-threads"]
    url = f"http://127.0.0.1:{port}"
    with running(command, url + "/health", env=env):
        yield url + "/index/"


def run(workdir: Path, rounds: int) -> Table:
    table = Table(f"Proxy: uv pip install of a {PROJECTS}-project closure, median of {rounds} rounds")
    venv = workdir / "venv"
    direct, cold, warm, static, peer_cold, peer_warm = [], [], [], [], [], []
    has_proxpi = (PEERS_VENV / "lib").exists() and bool(list((PEERS_VENV / "lib").glob("python*/site-packages/proxpi")))
    with FakeUpstream() as upstream:
        publish(upstream)
        mirror = workdir / "mirror"
        for _ in range(rounds):
            direct.append(install(upstream.url, venv))
            new_mirror(mirror, upstream.url)
            with gitmirror_serve(mirror) as url:
                cold.append(install(url + "/simple/", venv))
                warm += [install(url + "/simple/", venv) for _ in range(rounds)]
            if has_proxpi:
                try:
                    with proxpi(upstream.url, workdir / "proxpi-cache") as url:
                        peer_cold.append(install(url, venv))
                        peer_warm += [install(url, venv) for _ in range(rounds)]
                except RuntimeError as exc:  # a peer failing costs its rows, not the table
                    table.notes.append(f"proxpi failed a round: {exc}")
        site = workdir / "site"
        count, how = render_static(mirror, site)
        if peer("nginx"):
            with nginx(site, workdir) as url, gitmirror_serve(mirror) as proxy_url:
                install(proxy_url + "/simple/", venv)  # the proxy's pages fetched once again after its restart
                for _ in range(rounds):
                    static.append(install(url + "/simple/", venv))
                    warm.append(install(proxy_url + "/simple/", venv))
            table.notes.append(f"nginx (1 worker) serves {count} projects rendered by {how}")
        else:
            table.notes.append(missing("nginx"))
    median = statistics.median
    table.rows.append(Row("warm install", "nginx (static site)", median(static) if static else None, median(warm), "s"))
    table.rows.append(Row("cold install", "straight from upstream", median(direct), median(cold), "s"))
    if peer_cold and peer_warm:
        table.rows.append(Row("warm install", "proxpi", median(peer_warm), median(warm), "s"))
        table.rows.append(Row("cold install", "proxpi", median(peer_cold), median(cold), "s"))
    elif not has_proxpi:
        table.notes.append(f"proxpi not installed: {PEERS_VENV}/bin/pip install proxpi")
    table.notes.append("devpi-server: not measured (its mirror index needs devpi-client to point it at an upstream)")
    table.notes.append(
        f"upstream: tests/fakeupstream.py on 127.0.0.1, {PROJECTS} projects x 2 releases, wheels of "
        f"{PAYLOAD_BYTES // 1000} KB with PEP 658 files; uv --no-cache into a fresh venv each time"
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gitmirror-bench/proxy"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    table = run(args.workdir, args.rounds)
    print(table.markdown())
    for row in table.rows:
        if row.ratio is not None:
            print(f"{row.measure}: gitmirror / {row.peer} = {row.ratio:.2f}")


if __name__ == "__main__":
    main()

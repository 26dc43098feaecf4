"""Proxy: ``uv pip install`` of a 30-project closure through the pull-through proxy.

Warm (every file already recorded) against the same install from the rendered static site under
nginx; cold (a fresh mirror: every page and file pulled through) against installing straight from
the same upstream; proxpi (from the peers venv) cold and warm over the same upstream. Rounds
alternate, medians are compared. Each contestant's CPU is noted too (the machine may be shared): its
server's processes (with their children) and uv's, in core-seconds per install.

    python bench/proxy.py [--rounds 3] [--workdir /tmp/gitmirror-bench/proxy]
"""

from __future__ import annotations

import argparse
import resource
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
    nginx_running,
    peer,
    process_cpu,
    quiet_env,
    remove_tree,
    running,
    timed,
)
from serve_bench import SITE_SERVER, render_static

sys.path.insert(0, str(REPO_ROOT / "tests"))
from fakeupstream import FakeUpstream, build_wheel  # noqa: E402

PROJECTS = 30
PAYLOAD_BYTES = 200_000
ROOT = "bench-root"
#: seconds after which an install counts as failed (a peer that hangs costs its rows, not the table)
INSTALL_TIMEOUT = 60


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
    try:
        return timed([*command, "--index-url", index_url, ROOT], env=env, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"uv pip install from {index_url} took over {INSTALL_TIMEOUT} s") from None


def tree(pid: int) -> list[int]:
    """``pid`` and the processes it started, and theirs (from ``/proc``; threads and processes that
    end meanwhile are skipped)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return [pid, *(descendant for child in children for descendant in tree(child))]


def uv_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Contestant:
    """One contestant's install times, and the CPU its server processes and uv spent on them."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.server_cpu: list[float] = []
        self.client_cpu: list[float] = []

    def install(self, index_url: str, venv: Path, server: list[int]) -> None:
        server_before, client_before = _cpu(server), uv_cpu()
        self.seconds.append(install(index_url, venv))
        self.server_cpu.append(_cpu(server) - server_before)
        self.client_cpu.append(uv_cpu() - client_before)

    def note(self, name: str) -> str:
        median = statistics.median
        return (
            f"{name}: median {median(self.seconds):.2f} s; CPU per install: server "
            f"{median(self.server_cpu):.2f} core-s, uv {median(self.client_cpu):.2f} core-s"
        )


def _cpu(roots: list[int]) -> float:
    """Core-seconds of ``roots`` and their descendants (the in-process upstream: this process's own)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    if not roots:
        return own.ru_utime + own.ru_stime
    total = 0.0
    for pid in (pid for root in roots for pid in tree(root)):
        try:
            total += process_cpu([pid])
        except OSError:  # ended meanwhile
            continue
    return total


@contextmanager
def gitmirror_serve(mirror_dir: Path) -> Iterator[tuple[str, list[int]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*GITMIRROR, "serve", "--port", str(port), "--config", str(mirror_dir / "mirror.yaml")]
    with running(command, url + "/simple/", cwd=mirror_dir) as process:
        yield url, [process.pid]


def new_mirror(path: Path, upstream_url: str) -> Path:
    remove_tree(path)
    path.mkdir(parents=True)
    (path / "mirror.yaml").write_text(
        f"upstream: {upstream_url}\nrepo: repo\nstore: store\nproxy:\n  commit_interval: 5\n"
    )
    subprocess.run([*GITMIRROR, "init"], cwd=path, env=quiet_env(), capture_output=True, check=True)
    return path


@contextmanager
def proxpi(upstream_url: str, cache: Path) -> Iterator[tuple[str, list[int]]]:
    """proxpi (Flask's threaded server, as its README runs it) over the same upstream, caching in ``cache``."""
    remove_tree(cache)
    port = free_port()
    flask = str(PEERS_VENV / "bin" / "flask")
    env = quiet_env(PROXPI_INDEX_URL=upstream_url, PROXPI_CACHE_DIR=str(cache), PROXPI_LOGGING_LEVEL="WARNING")
    command = [flask, "--app", "proxpi.server", "run", "--port", str(port), "--with-threads"]
    url = f"http://127.0.0.1:{port}"
    with running(command, url + "/health", env=env) as process:
        yield url + "/index/", [process.pid]


def run(workdir: Path, rounds: int) -> Table:
    table = Table(f"Proxy: uv pip install of a {PROJECTS}-project closure, median of {rounds} rounds")
    venv = workdir / "venv"
    direct, cold, warm, static, peer_cold, peer_warm, restarted = (Contestant() for _ in range(7))
    has_proxpi = (PEERS_VENV / "lib").exists() and bool(list((PEERS_VENV / "lib").glob("python*/site-packages/proxpi")))
    with FakeUpstream() as upstream:
        publish(upstream)
        mirror = workdir / "mirror"
        for _ in range(rounds):
            direct.install(upstream.url, venv, [])
            new_mirror(mirror, upstream.url)
            with gitmirror_serve(mirror) as (url, pids):
                cold.install(url + "/simple/", venv, pids)
                for _ in range(rounds):
                    warm.install(url + "/simple/", venv, pids)
            if has_proxpi:
                try:
                    with proxpi(upstream.url, workdir / "proxpi-cache") as (url, pids):
                        peer_cold.install(url, venv, pids)
                        for _ in range(rounds):
                            peer_warm.install(url, venv, pids)
                except RuntimeError as exc:  # a peer failing costs its rows, not the table
                    table.notes.append(f"proxpi failed a round: {exc}")
        site = workdir / "site"
        count, how = render_static(mirror, site)
        if peer("nginx"):
            port = free_port()
            site_server = SITE_SERVER.format(port=port, site=site)
            with (
                nginx_running(workdir / "nginx", port, site_server, "/simple/") as (url, nginx_pids),
                gitmirror_serve(mirror) as (proxy_url, pids),
            ):
                restarted.install(proxy_url + "/simple/", venv, pids)  # its pages refreshed again after the restart
                for _ in range(rounds):
                    static.install(url + "/simple/", venv, nginx_pids)
                    warm.install(proxy_url + "/simple/", venv, pids)
            table.notes.append(f"nginx (1 worker) serves {count} projects rendered by {how}")
        else:
            table.notes.append(missing("nginx"))
    median = statistics.median
    nginx_warm = median(static.seconds) if static.seconds else None
    table.rows.append(Row("warm install", "nginx (static site)", nginx_warm, median(warm.seconds), "s"))
    table.rows.append(Row("cold install", "straight from upstream", median(direct.seconds), median(cold.seconds), "s"))
    if peer_cold.seconds and peer_warm.seconds:
        table.rows.append(Row("warm install", "proxpi", median(peer_warm.seconds), median(warm.seconds), "s"))
        table.rows.append(Row("cold install", "proxpi", median(peer_cold.seconds), median(cold.seconds), "s"))
    elif not has_proxpi:
        table.notes.append(f"proxpi not installed: {PEERS_VENV}/bin/pip install proxpi")
    contestants = [
        ("gitmirror proxy, warm", warm),
        ("gitmirror proxy, the first warm install after a restart", restarted),
        ("nginx, static site", static),
        ("gitmirror proxy, cold (upstream's CPU not counted)", cold),
        ("straight from upstream (server: the in-process upstream)", direct),
        ("proxpi, warm", peer_warm),
        ("proxpi, cold", peer_cold),
    ]
    table.notes += [contestant.note(name) for name, contestant in contestants if contestant.seconds]
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

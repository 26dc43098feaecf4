"""Proxy: ``uv pip install`` of a 30-project closure through the pull-through proxy.

Warm (every file already recorded) against the same install from the rendered static site under
nginx; cold (a fresh mirror: every page and file pulled through) against installing straight from
the same upstream; proxpi (from the peers venv) and devpi-server (from its own venv) cold and warm
over the same upstream. Rounds alternate, medians are compared. Each contestant's CPU is noted too
(the machine may be shared): its server's processes (with their children) and uv's, in
core-seconds per install. Every server has finished starting (its processes idle) before an
install is timed, and gitmirror runs as installed (``common.run_as_installed``), as ``run.py`` runs it.

    python bench/proxy.py [--rounds 3] [--workdir /tmp/gitmirror-bench/proxy]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
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
    run_as_installed,
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
#: devpi-server's own virtual environment (its dependencies pin versions the other peers' do not take)
DEVPI_VENV = Path(os.environ.get("GITMIRROR_BENCH_DEVPI", "/tmp/bench-peers-devpi"))
DEVPI_HINT = f"python3 -m venv {DEVPI_VENV} && {DEVPI_VENV}/bin/pip install devpi-server"
#: a server has finished starting once its processes spend less than this many core-seconds per ``IDLE_SECONDS``
IDLE_CPU = 0.01
IDLE_SECONDS = 0.3


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


def settle(server: list[int], deadline: float = 20) -> None:
    """Wait until the server's processes are idle: a cold install is timed against a running server,
    not one still starting its helpers (gitmirror's download processes start after it answers)."""
    end = time.monotonic() + deadline
    before = _cpu(server)
    while time.monotonic() < end:
        time.sleep(IDLE_SECONDS)
        now = _cpu(server)
        if now - before < IDLE_CPU:
            return
        before = now


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
        settle([process.pid])
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
        settle([process.pid])
        yield url + "/index/", [process.pid]


@contextmanager
def devpi(upstream_url: str, serverdir: Path) -> Iterator[tuple[str, list[int]]]:
    """devpi-server with one mirror index of the same upstream (made through its REST API, as
    devpi-client would), its state in ``serverdir``; no index of the public one (``--no-root-pypi``)."""
    remove_tree(serverdir)
    bin_dir = DEVPI_VENV / "bin"
    init = [str(bin_dir / "devpi-init"), "--serverdir", str(serverdir), "--no-root-pypi", "--root-passwd", "bench"]
    subprocess.run(init, env=quiet_env(), capture_output=True, check=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(bin_dir / "devpi-server"), "--serverdir", str(serverdir), "--host", "127.0.0.1", "--port", str(port)]
    with running(command, url + "/+api") as process:
        index = {"type": "mirror", "mirror_url": upstream_url}
        httpx.put(url + "/root/bench", json=index, auth=("root", "bench"), trust_env=False).raise_for_status()
        settle([process.pid])
        yield url + "/root/bench/+simple/", [process.pid]


def peer_rounds(
    name: str,
    serving: AbstractContextManager[tuple[str, list[int]]],
    cold: Contestant,
    warm: Contestant,
    venv: Path,
    rounds: int,
) -> str | None:
    """One cold install through a peer, then ``rounds`` warm ones; why it failed, or None."""
    try:
        with serving as (url, pids):
            cold.install(url, venv, pids)
            for _ in range(rounds):
                warm.install(url, venv, pids)
    except (RuntimeError, subprocess.CalledProcessError, httpx.HTTPError) as exc:  # a peer failing costs its rows
        return f"{name} failed a round: {exc}"
    return None


def run(workdir: Path, rounds: int) -> Table:
    table = Table(f"Proxy: uv pip install of a {PROJECTS}-project closure, median of {rounds} rounds")
    venv = workdir / "venv"
    direct, cold, warm, static, beside_static, peer_cold, peer_warm, restarted, devpi_cold, devpi_warm = (
        Contestant() for _ in range(10)
    )
    has_proxpi = (PEERS_VENV / "lib").exists() and bool(list((PEERS_VENV / "lib").glob("python*/site-packages/proxpi")))
    has_devpi = (DEVPI_VENV / "bin" / "devpi-server").exists()
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
                serving = proxpi(upstream.url, workdir / "proxpi-cache")
                failed = peer_rounds("proxpi", serving, peer_cold, peer_warm, venv, rounds)
                table.notes += [failed] if failed else []
            if has_devpi:
                serving = devpi(upstream.url, workdir / "devpi-server")
                failed = peer_rounds("devpi-server", serving, devpi_cold, devpi_warm, venv, rounds)
                table.notes += [failed] if failed else []
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
                    beside_static.install(proxy_url + "/simple/", venv, pids)
            table.notes.append(f"nginx (1 worker) serves {count} projects rendered by {how}")
        else:
            table.notes.append(missing("nginx"))
    median = statistics.median
    if static.seconds:  # the installs that took turns with nginx's
        nginx, ours = median(static.seconds), median(beside_static.seconds)
        table.rows.append(Row("warm install", "nginx (static site)", nginx, ours, "s"))
    table.rows.append(Row("cold install", "straight from upstream", median(direct.seconds), median(cold.seconds), "s"))
    if peer_cold.seconds and peer_warm.seconds:
        table.rows.append(Row("warm install", "proxpi", median(peer_warm.seconds), median(warm.seconds), "s"))
        table.rows.append(Row("cold install", "proxpi", median(peer_cold.seconds), median(cold.seconds), "s"))
    elif not has_proxpi:
        table.notes.append(f"proxpi not installed: {PEERS_VENV}/bin/pip install proxpi")
    if devpi_cold.seconds and devpi_warm.seconds:
        table.rows.append(Row("warm install", "devpi-server", median(devpi_warm.seconds), median(warm.seconds), "s"))
        table.rows.append(Row("cold install", "devpi-server", median(devpi_cold.seconds), median(cold.seconds), "s"))
    elif not has_devpi:
        table.notes.append(f"devpi-server not installed: {DEVPI_HINT}")
    contestants = [
        ("gitmirror proxy, warm (the installs after each round's cold one)", warm),
        ("gitmirror proxy, warm, taking turns with nginx", beside_static),
        ("gitmirror proxy, the first warm install after a restart", restarted),
        ("nginx, static site", static),
        ("gitmirror proxy, cold (upstream's CPU not counted)", cold),
        ("straight from upstream (server: the in-process upstream)", direct),
        ("proxpi, warm", peer_warm),
        ("proxpi, cold", peer_cold),
        ("devpi-server, warm", devpi_warm),
        ("devpi-server, cold", devpi_cold),
    ]
    table.notes += [contestant.note(name) for name, contestant in contestants if contestant.seconds]
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
    if not_installed := run_as_installed(args.workdir):
        print(f"gitmirror runs from the development environment's editable install: {not_installed}", flush=True)
    if not (DEVPI_VENV / "bin" / "devpi-server").exists():
        print(f"devpi-server not installed, skipped: {DEVPI_HINT}", flush=True)
    table = run(args.workdir, args.rounds)
    print(table.markdown())
    for row in table.rows:
        if row.ratio is not None:
            print(f"{row.measure}: gitmirror / {row.peer} = {row.ratio:.2f}")


if __name__ == "__main__":
    main()

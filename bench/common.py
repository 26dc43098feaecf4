"""What every benchmark stage shares: timing, subprocesses that must stop, peers, result tables.

A benchmark that leaves a server running or waits forever is worse than none, so every process
started here is tracked and stopped by its own id, and every wait has a deadline.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: how the stages run gitmirror; ``run_as_installed`` points it at a plain installation's layout
GITMIRROR = [PYTHON, "-m", "gitmirror"]
PEERS_VENV = Path(os.environ.get("GITMIRROR_BENCH_PEERS", "/tmp/bench-peers"))
INSTALL_HINT = {
    "bandersnatch": f"python3 -m venv {PEERS_VENV} && {PEERS_VENV}/bin/pip install bandersnatch",
    "pypi-server": f"python3 -m venv {PEERS_VENV} && {PEERS_VENV}/bin/pip install pypiserver waitress",
    "nginx": "apt-get update && apt-get install -y nginx",
    "wrk": "apt-get update && apt-get install -y wrk",
}


#: ext4 without a journal checks every new inode against those freed in the last 60 s (360 s while
#: their inode table block is dirty) and skips each one it finds (``sync_bench.spread_directories``)
RECENTLY_FREED_SECONDS = 365
REMOVED_STAMP = Path(tempfile.gettempdir()) / "gitmirror-bench-removed-at"


def remove_tree(path: Path) -> None:
    """``rm -r``, remembered: a cold sync timed in the next minutes would pay for the freed inodes."""
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
        REMOVED_STAMP.touch()


def wait_for_removals(wait: bool) -> float:
    """Seconds until the bench's last removal is ``RECENTLY_FREED_SECONDS`` old (0: it is), slept
    through when ``wait``."""
    try:
        age = time.time() - REMOVED_STAMP.stat().st_mtime
    except FileNotFoundError:
        return 0.0
    left = max(0.0, RECENTLY_FREED_SECONDS - age)
    if left and wait:
        print(f"waiting {left:.0f} s: the bench removed files {age:.0f} s ago", flush=True)
        time.sleep(left)
    return left


def run_as_installed(workdir: Path) -> str | None:
    """Run gitmirror from a virtual environment that imports it the way a ``pip install`` does.

    The development environment installs gitmirror *editable*: a ``.pth`` file loads an import hook
    (pathlib, importlib.util, fnmatch) into every interpreter it starts, 11-24 ms before ``main`` -
    a sixth of a warm sync, paid by no deployed mirror. The environment made here has a ``.pth``
    file of plain paths instead (the source tree, then the development environment's
    site-packages for the dependencies); plain paths are added to ``sys.path`` as they are, the
    hooks in the directories they name are not run. Returns why it could not, or None.
    """
    import compileall
    import sysconfig
    import venv

    root = workdir / "gitmirror-venv"
    try:
        if not (root / "bin" / "python").exists():
            venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
        found = list(root.glob("lib/python*/site-packages"))
        if not found:
            return f"no site-packages in {root}"
        (found[0] / "gitmirror-bench.pth").write_text(f"{REPO_ROOT}\n{sysconfig.get_paths()['purelib']}\n")
        # as ``pip install`` does: with PYTHONDONTWRITEBYTECODE set (this machine sets it), every
        # module edited since its last compilation was compiled again by every process, every run
        compileall.compile_dir(REPO_ROOT / "gitmirror", quiet=1)
    except OSError as exc:
        return f"cannot make {root}: {exc}"
    GITMIRROR[:] = [str(root / "bin" / "python"), "-m", "gitmirror"]  # the stages hold this very list
    return None


def quiet_env(**extra: str) -> dict[str, str]:
    """The environment for tools under test, without this machine's pip/uv/git configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "GIT_"))}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        PIP_CONFIG_FILE="/dev/null",
    )
    env.update(extra)
    return env


def peer(name: str) -> str | None:
    """The executable of a peer tool, from the peers venv or PATH; None when it is not installed."""
    candidate = PEERS_VENV / "bin" / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


def missing(name: str) -> str:
    return f"{name} not installed: {INSTALL_HINT.get(name, 'install it')}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(
    command: list[str],
    *,
    cwd: Path | None = None,
    timeout: float = 1800,
    env: dict | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> float:
    """Wall seconds of one command; a failing command stops the benchmark with its stderr."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env or quiet_env(), capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if result.returncode not in ok_codes:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(command[:3])}... exited {result.returncode}: {' | '.join(tail)}")
    return elapsed


@contextmanager
def running(
    command: list[str], url: str, *, cwd: Path | None = None, deadline: float = 60, env: dict | None = None
) -> Iterator[subprocess.Popen]:
    """Start a server, wait (bounded) until ``url`` answers, and always stop it afterwards.

    Its stderr goes to a temporary file, not a pipe: a pipe nobody reads fills up, and a server that
    logs every request then blocks in its next write (proxpi under Flask did, after 64 KB).
    """
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(command, cwd=cwd, env=env or quiet_env(), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        end = time.monotonic() + deadline
        while True:
            if process.poll() is not None:
                stderr.seek(0)
                raise RuntimeError(f"{command[0]} exited: {stderr.read().decode(errors='replace')[-500:]}")
            try:
                httpx.get(url, timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                if time.monotonic() > end:
                    raise RuntimeError(f"{command[0]} did not answer {url} within {deadline} s") from None
                time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        stderr.close()


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp; fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
{servers}
}}
"""


@contextmanager
def nginx_running(prefix: Path, port: int, servers: str, ready_path: str) -> Iterator[tuple[str, list[int]]]:
    """nginx (one worker: the machine has two cores) with ``servers`` as its ``http`` block's
    servers; yields its base URL and its process ids (master and worker, for CPU accounting)."""
    remove_tree(prefix)
    (prefix / "tmp").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, servers=servers))
    url = f"http://127.0.0.1:{port}"
    with running([peer("nginx") or "nginx", "-c", str(conf), "-p", str(prefix)], url + ready_path) as process:
        yield url, [process.pid, *children(process.pid)]


def children(pid: int) -> list[int]:
    """The process's children (its main thread's, as nginx's master forks its workers there)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


UPSTREAM_FRONT = """
    upstream generated_index {{ server 127.0.0.1:{backend}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location /packages/ {{ root {root}; types {{ }} default_type application/octet-stream; }}
        location / {{
            proxy_pass http://generated_index;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
    }}
"""


@contextmanager
def upstream_server(root: Path, workdir: Path) -> Iterator[tuple[str, list[int]]]:
    """The generated upstream on a free loopback port; yields (base URL, the serving processes' ids).

    Where nginx is installed it serves the release files (sendfile, as a real index's file host
    or CDN would) and passes everything else (pages, JSON API, XML-RPC) to bench/upstream.py.
    A real upstream costs the mirror's machine nothing; the Python server spent 1.2-1.4 core-s
    of a 2-core machine on a cold sync's 3,000 file requests, taken from whichever contestant
    uses both cores (bench/RESULTS.md, item 27). Without nginx, bench/upstream.py serves all.
    """
    backend = free_port()
    script = str(Path(__file__).parent / "upstream.py")
    if not peer("nginx"):
        url = f"http://127.0.0.1:{backend}"
        with running([PYTHON, script, "serve", str(root), "--port", str(backend)], url + "/simple/") as process:
            yield url, [process.pid]
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [PYTHON, script, "serve", str(root), "--port", str(backend), "--base", url]
    with running(command, f"http://127.0.0.1:{backend}/simple/") as process:
        front = UPSTREAM_FRONT.format(backend=backend, port=port, root=root)
        with nginx_running(workdir / "upstream-front", port, front, "/simple/") as (_, front_pids):
            yield url, [process.pid, *front_pids]


_TICKS = os.sysconf("SC_CLK_TCK")


def busy_cpu() -> float:
    """Core-seconds the whole machine has spent busy since boot (``/proc/stat``: all but idle and
    iowait), so a contestant's processes count however they were started and reaped."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / _TICKS


def process_cpu(pids: list[int]) -> float:
    """Core-seconds some processes have spent (user + system), from ``/proc/<pid>/stat``."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


# -- results -----------------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    peer: str
    peer_value: float | None
    ours: float | None
    unit: str
    lower_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.peer_value in (None, 0) or self.ours is None:
            return None
        return self.ours / self.peer_value


@dataclass
class Table:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            f"### {self.title}",
            "",
            "| measure | peer | peer figure | gitmirror | ratio (gitmirror / peer) | note |",
            "| --- | --- | ---: | ---: | ---: | --- |",
        ]
        for row in self.rows:
            better = "lower is better" if row.lower_is_better else "higher is better"
            ratio = f"{row.ratio:.2f}" if row.ratio is not None else "n/a"
            lines.append(
                f"| {row.measure} ({row.unit}, {better}) | {row.peer} | {_fmt(row.peer_value)} | "
                f"{_fmt(row.ours)} | {ratio} | {row.note} |"
            )
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value >= 0.01 else f"{value:.2e}"

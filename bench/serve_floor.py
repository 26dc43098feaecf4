"""Where `/simple/<project>/`'s CPU goes: `gitmirror serve` against nginx and the floors under it.

``python bench/serve_floor.py MIRROR_DIR [--rounds 5] [--seconds 4]`` serves one page of the synced
mirror in ``MIRROR_DIR`` (a bench run's ``gitmirror-mirror``) from four servers, all up at once and
measured in rotating order with ``wrk -t1 -c32`` (CPU per request, each server's processes): nginx
over the rendered site, ``gitmirror serve`` (this checkout), uvicorn with a bare ASGI app sending
the same page bytes and headers, and uvicorn with Starlette routing to one endpoint that sends
them (uvicorn set as ``serve`` sets it). Then the app alone,
in-process (no sockets): the whole app, without the request metrics middleware, also without the
branch-tip check, and the one-route Starlette app. The differences say what each layer costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import PYTHON, free_port, nginx_running, process_cpu, quiet_env, running
from serve_bench import HTML, SITE_SERVER, render_static, wrk

PROJECT = "bench-0001"
PATH = f"/simple/{PROJECT}/"


def floor_app(kind: str, start: dict[str, Any], body: dict[str, Any]) -> Any:
    """The ASGI app of a floor: ``asgi`` sends the two messages, ``starlette`` routes to an endpoint
    that sends them (the router, its middleware and a ``Request``-free ASGI endpoint)."""

    class Page:
        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            await send(start)
            await send(body)

    if kind == "asgi":
        return Page()
    from starlette.applications import Starlette
    from starlette.routing import Route

    return Starlette(routes=[Route("/simple/{project}/", Page(), methods=["GET", "HEAD"])])


def gitmirror_app(mirror: Path) -> Any:
    from gitmirror.serve.server import create_app
    from gitmirror.sync.config import load

    return create_app(load(mirror / "mirror.yaml"))


def scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"accept", HTML.encode())],
        "state": {},
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def page_messages(app: Any) -> list[dict[str, Any]]:
    """The start and body messages ``app`` answers the page with (the floors send the same)."""
    sent: list[dict[str, Any]] = []

    async def keep(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope(), receive, keep)
    return sent


def serve_floor(kind: str, mirror: Path, port: int) -> None:
    """Run one floor server (a child process of this script)."""
    import uvicorn

    start, body = asyncio.run(page_messages(gitmirror_app(mirror)))
    app = floor_app(kind, start, body)
    uvicorn.run(app, port=port, access_log=False, proxy_headers=False, log_level="warning", backlog=2048)


async def in_process(mirror: Path, rounds: int, requests: int = 10_000) -> dict[str, float]:
    """us of CPU per request of each app variant, called directly (medians of ``rounds``)."""
    whole = gitmirror_app(mirror)
    start, body = await page_messages(whole)
    quiet = gitmirror_app(mirror)
    quiet.user_middleware = [m for m in quiet.user_middleware if "RequestMetrics" not in repr(m)]
    no_tip = gitmirror_app(mirror)
    no_tip.user_middleware = list(quiet.user_middleware)
    tip = no_tip.state.view.tip()
    no_tip.state.view.tip = lambda: tip
    apps = {
        "gitmirror app": whole,
        "without request metrics": quiet,
        "without metrics and tip check": no_tip,
        "starlette, one route": floor_app("starlette", start, body),
        "bare asgi": floor_app("asgi", start, body),
    }

    async def drop(message: dict[str, Any]) -> None:
        pass

    times: dict[str, list[float]] = {label: [] for label in apps}
    for _ in range(rounds + 1):  # the first round warms up
        for label, app in apps.items():
            began = time.process_time()
            for _ in range(requests):
                await app(scope(), receive, drop)
            times[label].append((time.process_time() - began) / requests * 1e6)
    return {label: statistics.median(values[1:]) for label, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mirror", type=Path, help="a synced mirror directory (its mirror.yaml, repo, store)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4, help="per measure")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gitmirror-bench"))
    parser.add_argument("--floor", choices=["asgi", "starlette"], help=argparse.SUPPRESS)  # a child server
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    mirror = args.mirror.resolve()
    if args.floor:
        serve_floor(args.floor, mirror, args.port)
        return
    cpu: dict[str, list[float]] = {}
    with ExitStack() as servers:
        site = args.workdir / "serve-floor-site"
        render_static(mirror, site)
        urls, pids = {}, {}
        port = free_port()
        served = SITE_SERVER.format(port=port, site=site)
        urls["nginx"], pids["nginx"] = servers.enter_context(nginx_running(args.workdir / "nginx", port, served, PATH))
        commands = {
            "gitmirror serve": [PYTHON, "-m", "gitmirror", "serve", "--config", str(mirror / "mirror.yaml")],
            "uvicorn + asgi": [PYTHON, __file__, str(mirror), "--floor", "asgi"],
            "uvicorn + starlette": [PYTHON, __file__, str(mirror), "--floor", "starlette"],
        }
        for label, command in commands.items():
            port = free_port()
            urls[label] = f"http://127.0.0.1:{port}"
            process = running([*command, "--port", str(port)], urls[label] + PATH, cwd=mirror, env=quiet_env())
            pids[label] = [servers.enter_context(process).pid]
        order = list(urls)
        for number in range(args.rounds):
            line = []
            for label in order[number % len(order) :] + order[: number % len(order)]:
                before = process_cpu(pids[label])
                load = wrk(urls[label] + PATH, args.seconds, HTML)
                cpu.setdefault(label, []).append((process_cpu(pids[label]) - before) / load.requests * 1e6)
                line.append(f"{label} {cpu[label][-1]:.1f} us")
            print(f"round {number + 1}: " + ", ".join(line), flush=True)
    nginx = statistics.median(cpu["nginx"])
    for label, values in cpu.items():
        median = statistics.median(values)
        print(f"{label:20s} {median:6.1f} us CPU per request ({nginx / median:.2f} of nginx)")
    for label, value in asyncio.run(in_process(mirror, args.rounds)).items():
        print(f"in-process {label:30s} {value:6.2f} us")


if __name__ == "__main__":
    sys.exit(main())

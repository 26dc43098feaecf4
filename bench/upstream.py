"""A generated package index on disk and a fast loopback server for it, shared by every peer.

Both mirrors are pointed at the same server, so its speed must not decide the race: pages are
rendered once at start-up and held in memory, files go out with ``sendfile`` (zero copy), and
connections are kept alive. It speaks what each peer asks for:

- PEP 691 JSON and PEP 503 HTML at ``/simple/`` and ``/simple/<project>/`` (gitmirror);
- the per-project JSON API at ``/pypi/<project>/json`` with ``X-PyPI-Last-Serial`` and XML-RPC
  ``list_packages_with_serial`` / ``changelog_since_serial`` / ``changelog_last_serial`` at
  ``POST /pypi`` (bandersnatch);
- release files and their PEP 658 ``.metadata`` at ``/packages/<project>/<filename>``.

``python bench/upstream.py generate ROOT --projects N --files M`` writes an index;
``python bench/upstream.py serve ROOT`` serves it on a free loopback port and prints the URL.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import json
import random
import socket
import sys
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakeupstream import build_sdist, build_wheel  # noqa: E402

CATALOG = "catalog.json"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
UPLOAD_TIME = "2024-01-02T03:04:05.000000Z"
ONE_MB_PROJECT = "bench-0000"  # its first file is a 1 MiB wheel, the serve benchmark's file


@dataclass(frozen=True)
class SizeMix:
    """Release file sizes: mostly small, a tail of big ones, as on a real index."""

    buckets: tuple[tuple[float, int, int], ...]  # (weight, smallest, largest) in bytes

    def draw(self, rng: random.Random) -> int:
        weight, low, high = rng.choices(self.buckets, weights=[b[0] for b in self.buckets])[0]
        return int(low * (high / low) ** rng.random())  # log-uniform inside the bucket


FULL_MIX = SizeMix(
    ((0.55, 5_000, 50_000), (0.30, 50_000, 1_000_000), (0.12, 1_000_000, 5_000_000), (0.03, 5_000_000, 20_000_000))
)
QUICK_MIX = SizeMix(((0.6, 5_000, 50_000), (0.35, 50_000, 500_000), (0.05, 500_000, 2_000_000)))


def generate(root: Path, projects: int, files: int, mix: SizeMix, seed: int = 8) -> dict:
    """Write ``projects`` x ``files`` real wheels and sdists plus ``catalog.json``; reused if present."""
    catalog_path = root / CATALOG
    wanted = {"projects": projects, "files": files, "mix": [list(b) for b in mix.buckets], "seed": seed}
    if catalog_path.exists():
        catalog = json.loads(catalog_path.read_text())
        if catalog["params"] == wanted:
            return catalog
    rng = random.Random(seed)
    entries = []
    for number in range(projects):
        name = f"bench-{number:04d}"
        directory = root / "packages" / name
        directory.mkdir(parents=True, exist_ok=True)
        records = []
        for index in range(files):
            version = f"1.{index}"
            size = 1 << 20 if (name == ONE_MB_PROJECT and index == 0) else mix.draw(rng)
            if index == files - 1 and files > 1:
                artifact = build_sdist(name, version, payload_size=min(size, 200_000))
            else:
                artifact = build_wheel(name, version, requires_python=">=3.8", payload_size=size)
            (directory / artifact.filename).write_bytes(artifact.data)
            record = {
                "filename": artifact.filename,
                "version": version,
                "sha256": artifact.sha256,
                "size": artifact.size,
                "requires_python": artifact.requires_python,
                "metadata_sha256": artifact.metadata_sha256,
            }
            if artifact.metadata is not None:
                (directory / (artifact.filename + ".metadata")).write_bytes(artifact.metadata)
            records.append(record)
        entries.append({"name": name, "serial": number + 1, "files": records})
    catalog = {"params": wanted, "projects": entries}
    catalog_path.write_text(json.dumps(catalog))
    return catalog


def total_bytes(catalog: dict) -> int:
    return sum(record["size"] for project in catalog["projects"] for record in project["files"])


# -- rendering ---------------------------------------------------------------------------------


def _file_url(project: str, filename: str) -> str:
    return f"/packages/{project}/{filename}"


def simple_json(project: dict) -> bytes:
    files = []
    for record in project["files"]:
        item = {
            "filename": record["filename"],
            "url": _file_url(project["name"], record["filename"]),
            "hashes": {"sha256": record["sha256"]},
            "requires-python": record["requires_python"],
            "size": record["size"],
            "upload-time": UPLOAD_TIME,
            "yanked": False,
        }
        if record["metadata_sha256"]:
            item["core-metadata"] = {"sha256": record["metadata_sha256"]}
        files.append(item)
    page = {
        "meta": {"api-version": "1.1", "_last-serial": project["serial"]},
        "name": project["name"],
        "versions": [r["version"] for r in project["files"]],
        "files": files,
    }
    return json.dumps(page).encode()


def simple_html(project: dict) -> bytes:
    links = []
    for record in project["files"]:
        attributes = f'href="{_file_url(project["name"], record["filename"])}#sha256={record["sha256"]}"'
        if record["requires_python"]:
            attributes += f' data-requires-python="{html.escape(record["requires_python"])}"'
        if record["metadata_sha256"]:
            attributes += f' data-core-metadata="sha256={record["metadata_sha256"]}"'
        links.append(f"<a {attributes}>{record['filename']}</a><br>")
    return (
        f"<!DOCTYPE html><html><body><h1>Links for {project['name']}</h1>" + "".join(links) + "</body></html>"
    ).encode()


def pypi_json(project: dict, base: str) -> bytes:
    """The legacy per-project JSON API, with the fields bandersnatch reads."""
    releases: dict[str, list[dict]] = {}
    for record in project["files"]:
        releases.setdefault(record["version"], []).append(
            {
                "filename": record["filename"],
                "url": base + _file_url(project["name"], record["filename"]),
                "size": record["size"],
                "upload_time_iso_8601": UPLOAD_TIME,
                "upload_time": UPLOAD_TIME[:19],
                "digests": {"sha256": record["sha256"]},
                "requires_python": record["requires_python"],
                "yanked": False,
                "yanked_reason": None,
                "packagetype": "bdist_wheel" if record["filename"].endswith(".whl") else "sdist",
            }
        )
    latest = project["files"][-1]["version"]
    info = {"name": project["name"], "version": latest, "summary": "benchmark project"}
    return json.dumps(
        {"info": info, "last_serial": project["serial"], "releases": releases, "urls": releases[latest]}
    ).encode()


class Index:
    """Everything the server answers, rendered once."""

    def __init__(self, root: Path, catalog: dict, base: str) -> None:
        self.root = root
        self.pages: dict[str, tuple[bytes, bytes, dict[str, str]]] = {}
        self.serials = {p["name"]: p["serial"] for p in catalog["projects"]}
        self.last_serial = max(self.serials.values(), default=0)
        names = sorted(self.serials)
        root_json = json.dumps(
            {
                "meta": {"api-version": "1.1", "_last-serial": self.last_serial},
                "projects": [{"name": n, "_last-serial": self.serials[n]} for n in names],
            }
        ).encode()
        root_html = (
            "<!DOCTYPE html><html><body>" + "".join(f'<a href="/simple/{n}/">{n}</a>' for n in names) + "</body></html>"
        ).encode()
        self.simple = {"": (root_json, root_html)}
        for project in catalog["projects"]:
            self.simple[project["name"]] = (simple_json(project), simple_html(project))
            self.pages[f"/pypi/{project['name']}/json"] = (
                pypi_json(project, base),
                b"application/json",
                {"X-PyPI-Last-Serial": str(project["serial"])},
            )

    def xmlrpc(self, body: bytes) -> bytes:
        params, method = xmlrpc.client.loads(body)
        if method == "list_packages_with_serial":
            result: object = self.serials
        elif method == "list_packages":
            result = sorted(self.serials)
        elif method == "changelog_last_serial":
            result = self.last_serial
        elif method == "changelog_since_serial":
            since = int(params[0]) if params else 0
            result = [[n, "1.0", 1700000000, "new release", s] for n, s in self.serials.items() if s > since]
        else:
            return xmlrpc.client.dumps(xmlrpc.client.Fault(1, f"unknown method {method}"), methodresponse=True).encode()
        return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True).encode()


# -- the server --------------------------------------------------------------------------------


async def _handle(index: Index, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = target.split("?", 1)[0]
            await _answer(index, loop, writer, method, path, headers, body)
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _answer(
    index: Index,
    loop: asyncio.AbstractEventLoop,
    writer: asyncio.StreamWriter,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    def send(status: str, payload: bytes, content_type: bytes, extra: dict[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(payload)}", f"Content-Type: {content_type.decode()}"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (payload if method != "HEAD" else b""))

    if method == "POST" and path.rstrip("/") == "/pypi":
        send("200 OK", index.xmlrpc(body), b"text/xml")
    elif path.startswith("/simple/"):
        key = path[len("/simple/") :].strip("/")
        if key not in index.simple:
            send("404 Not Found", b"not found", b"text/plain")
        else:
            as_json = JSON_TYPE in headers.get("accept", "")
            page = index.simple[key][0 if as_json else 1]
            serial = str(index.serials.get(key, index.last_serial))
            # a real index tags pages (per representation) and answers a matching If-None-Match with 304
            etag = f'"{hashlib.sha256(page).hexdigest()[:32]}"'
            extra = {"X-PyPI-Last-Serial": serial, "ETag": etag, "Vary": "Accept"}
            if etag in (tag.strip() for tag in headers.get("if-none-match", "").split(",")):
                send("304 Not Modified", b"", JSON_TYPE.encode() if as_json else b"text/html", extra)
            else:
                send("200 OK", page, JSON_TYPE.encode() if as_json else b"text/html", extra)
    elif path in index.pages:
        payload, content_type, extra = index.pages[path]
        send("200 OK", payload, content_type, extra)
    elif path.startswith("/packages/") and ".." not in path:
        file_path = index.root / path.lstrip("/")
        try:
            handle = file_path.open("rb")
        except OSError:
            send("404 Not Found", b"not found", b"text/plain")
            await writer.drain()
            return
        with handle:
            size = file_path.stat().st_size
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            )
            if method != "HEAD":
                await writer.drain()
                await loop.sendfile(writer.transport, handle)
    else:
        send("404 Not Found", b"not found", b"text/plain")
    await writer.drain()


async def serve(root: Path, port: int, base: str | None = None) -> None:
    """``base``: the address clients use, when a front server (bench/common.py) stands before this one."""
    catalog = json.loads((root / CATALOG).read_text())
    base = base or f"http://127.0.0.1:{port}"
    index = Index(root, catalog, base)
    server = await asyncio.start_server(lambda r, w: _handle(index, r, w), "127.0.0.1", port, backlog=1024)
    print(base, flush=True)
    async with server:
        await server.serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate")
    gen.add_argument("root", type=Path)
    gen.add_argument("--projects", type=int, default=300)
    gen.add_argument("--files", type=int, default=10)
    gen.add_argument("--quick", action="store_true", help="small files (QUICK_MIX)")
    srv = commands.add_parser("serve")
    srv.add_argument("root", type=Path)
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--base", help="the base URL clients reach it at (default: its own address)")
    args = parser.parse_args()
    if args.command == "generate":
        catalog = generate(args.root, args.projects, args.files, QUICK_MIX if args.quick else FULL_MIX)
        print(f"{len(catalog['projects'])} projects, {total_bytes(catalog) / 1e6:.1f} MB")
    else:
        asyncio.run(serve(args.root, args.port or free_port(), args.base))


if __name__ == "__main__":
    main()

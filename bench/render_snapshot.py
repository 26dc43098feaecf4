"""Static render and snapshot resolution at scale: full render vs incremental, date and id lookups.

Builds a synthetic metadata repository (N projects, a few files each, 20 commits of history) in a
temporary directory, then times, in-process:

- a full ``render --files none`` of the tip, then an incremental one after one project changed;
- resolving an abbreviated commit id and an ISO date (uncached, as the first request pays it).

Usage: ``python bench/render_snapshot.py [--projects 5000]``
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gitmirror.model.manifest import FileEntry, ProjectManifest, manifest_path
from gitmirror.serve.render import render_site
from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.snapshot import resolve
from gitmirror.storage.store import BlobStore


def manifest(name: str, versions: int) -> bytes:
    project = ProjectManifest(name=name)
    for minor in range(versions):
        filename = f"{name.replace('-', '_')}-1.{minor}-py3-none-any.whl"
        digest = hashlib.sha256(filename.encode()).hexdigest()
        project = project.with_file(
            FileEntry(
                filename=filename,
                version=f"1.{minor}",
                sha256=digest,
                size=1000 + minor,
                requires_python=">=3.8",
                upload_time="2026-01-01T00:00:00Z",
                first_seen="2026-01-02T00:00:00Z",
            )
        )
    return project.dumps()


def timed(label: str, action):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = action()
    print(f"{label:<48} {time.perf_counter() - start:8.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitmirror-bench-") as tmp:
        root = Path(tmp)
        repo = MetadataRepo.init(root / "repo")
        # Names spread over the shards as real names are (not all in one directory).
        names = [f"{hashlib.sha256(str(index).encode()).hexdigest()[:10]}-pkg" for index in range(args.projects)]
        parent = timed(
            f"commit {args.projects} projects",
            lambda: repo.write_commit({manifest_path(n): manifest(n, 3) for n in names}, "initial"),
        )
        for step in range(19):  # some history for date and id resolution to walk
            name = names[step * 7 % len(names)]
            parent = repo.write_commit({manifest_path(name): manifest(name, 4 + step)}, f"step {step}", parent=parent)
        store = BlobStore(root / "store")
        out = root / "site"
        full = timed("render --files none (full)", lambda: render_site(repo, store, parent, out, files_mode="none"))
        print(f"  {full.summary()}")
        changed = names[len(names) // 2]
        parent = repo.write_commit({manifest_path(changed): manifest(changed, 9)}, "one change", parent=parent)
        incremental = timed(
            "render --files none (1 project changed)", lambda: render_site(repo, store, parent, out, files_mode="none")
        )
        print(f"  {incremental.summary()}")
        timed("resolve abbreviated commit id (7 digits)", lambda: resolve(repo, parent.decode()[:7]))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        timed("resolve ISO date-time", lambda: resolve(repo, now))
        repo.close()


if __name__ == "__main__":
    main()

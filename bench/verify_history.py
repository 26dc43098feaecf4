"""Is ``gitmirror verify`` linear in history size? And does the hook's cost depend on history at all?

Builds one repository of 1,000 commits shaped like a mirror's life (each commit adds releases to
a few of 200 projects, every tenth also yanks or deprecates), then verifies the history up to
commit 250, 500 and 1,000. Doubling the history should double the time (ratio near 2.0; near 4.0
would be quadratic). It then times the pre-receive check of a 10-commit push on top of 250 and
of 1,000 commits: it judges only the pushed commits, so that time should not grow.

The repository is repacked (``git repack -a -d``) while it is built and before measuring:
``MetadataRepo.write_commit`` writes one pack per commit, and dulwich looks an object up pack by
pack, so an unrepacked repository makes every read slower as commits accumulate, whatever the
algorithm. ``--as-written`` skips the repacking to show that effect.

    /tmp/venv/bin/python bench/verify_history.py [--commits 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from gitmirror.audit.hooks import RefUpdate, judge  # noqa: I001 - grouped with the package it measures
from gitmirror.audit.verify import verify
from gitmirror.model.manifest import FileEntry, ProjectManifest, manifest_path
from gitmirror.storage.repo import MetadataRepo

PROJECTS = 200


def entry(project: str, release: int, rng: random.Random) -> FileEntry:
    filename = f"{project.replace('-', '_')}-1.{release}-py3-none-any.whl"
    return FileEntry(
        filename=filename,
        version=f"1.{release}",
        sha256=f"{rng.getrandbits(256):064x}",
        size=rng.randint(1, 10**7),
        requires_python=">=3.8",
        upload_time="2026-01-02T03:04:05Z",
        core_metadata=f"{rng.getrandbits(256):064x}",
        first_seen="2026-01-02T03:04:05Z",
    )


def repack(path: Path) -> MetadataRepo:
    """One pack for everything; a fresh handle so dulwich sees the new pack list."""
    subprocess.run(["git", "--git-dir", str(path), "repack", "-a", "-d", "-q"], check=True)
    return MetadataRepo(path)


def build(repo: MetadataRepo, commits: int, seed: int = 7, repack_every: int = 100) -> tuple[list[bytes], list[int]]:
    """A history of ``commits`` allowed changes: the commit ids, oldest first, and for each the
    cumulative bytes of manifests a verify of the history up to it parses (old and new sides)."""
    rng = random.Random(seed)
    state: dict[str, ProjectManifest] = {}
    ids: list[bytes] = []
    judged: list[int] = []
    total = 0
    parent = None
    for number in range(commits):
        changes: dict[str, bytes | None] = {}
        for _ in range(3):
            name = f"proj-{rng.randrange(PROJECTS):04d}"
            manifest = state.get(name, ProjectManifest(name=name))
            manifest = manifest.with_file(entry(name, len(manifest.files), rng))
            if number % 10 == 9 and manifest.files:
                first = next(iter(manifest.files.values()))
                manifest = manifest.with_file(replace(first, yanked="bench"))
            if name in state and manifest_path(name) not in changes:
                total += len(state[name].dumps())
            state[name] = manifest
            changes[manifest_path(name)] = manifest.dumps()
        total += sum(len(data) for data in changes.values() if data)
        parent = repo.write_commit(changes, f"sync {number}", parent=parent)
        ids.append(parent)
        judged.append(total)
        if repack_every and number % repack_every == repack_every - 1:
            repo.close()
            repo = repack(repo.path)
    repo.close()
    return ids, judged


def best_of(repeat: int, action) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--as-written", action="store_true", help="keep one pack per commit, as sync writes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as scratch:
        path = Path(scratch) / "repo"
        start = time.perf_counter()
        ids, judged = build(MetadataRepo.init(path), args.commits + 10, repack_every=0 if args.as_written else 100)
        repo = MetadataRepo(path) if args.as_written else repack(path)
        packs = len(list((path / "objects" / "pack").glob("*.pack")))
        elapsed = time.perf_counter() - start
        print(f"built {len(ids)} commits over {PROJECTS} projects in {elapsed:.1f} s; {packs} packs")
        sizes = [args.commits // 4, args.commits // 2, args.commits]
        print(f"\n{'commits':>8} {'verify s':>9} {'ratio vs half':>14} {'manifest MB parsed':>19} {'s per MB':>9}")
        previous = None
        for size in sizes:
            rev = ids[size - 1].decode()
            report = verify(repo, None, rev)
            assert report.ok and report.commits == size, report.listing()
            seconds = best_of(args.repeat, lambda rev=rev: verify(repo, None, rev))
            ratio = f"{seconds / previous:.2f}" if previous else "-"
            megabytes = judged[size - 1] / 1e6
            print(f"{size:>8} {seconds:>9.3f} {ratio:>14} {megabytes:>19.2f} {seconds / megabytes:>9.2f}")
            previous = seconds

        print(f"\n{'history':>8} {'hook check of a 10-commit push, s':>34}")
        for base in (args.commits // 4, args.commits):
            # Pretend refs/heads/main is at ``base`` and the push brings the next 10 commits.
            repo.git.refs[b"refs/heads/main"] = ids[base - 1]
            pushed = ids[base + 9] if base + 9 < len(ids) else ids[-1]
            update = RefUpdate(ids[base - 1], pushed, b"refs/heads/main")
            decision = judge(repo, [update])
            assert not decision.rejected, decision.messages
            seconds = best_of(args.repeat, lambda update=update: judge(repo, [update]))
            print(f"{base:>8} {seconds:>34.4f}")
        repo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

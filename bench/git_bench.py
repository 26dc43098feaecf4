"""Git scale: how commit and render times grow as the number of projects doubles.

There is no peer here: the question is whether the cost is linear. Each row compares the time
for N with the time for N/2; a growth ratio near 2.0 is linear, near 4.0 is quadratic.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from common import GITMIRROR, Row, Table, quiet_env, remove_tree

from gitmirror.model.manifest import FileEntry, ProjectManifest, manifest_path
from gitmirror.serve import index
from gitmirror.storage.repo import MetadataRepo

SHA = "ab" * 32


def manifest(number: int, files: int) -> ProjectManifest:
    name = f"proj-{number:06d}"
    entries = {}
    for release in range(files):
        filename = f"proj_{number:06d}-1.{release}-py3-none-any.whl"
        entries[filename] = FileEntry(
            filename=filename,
            version=f"1.{release}",
            sha256=SHA,
            size=1000 + release,
            requires_python=">=3.8",
            upload_time="2024-01-02T03:04:05Z",
            core_metadata=SHA,
            first_seen="2024-01-02T03:04:05Z",
        )
    return ProjectManifest(name=name, files=entries)


def commit_times(path: Path, count: int) -> tuple[float, float]:
    """Seconds to commit ``count`` new manifests, then ``count`` changed ones on top."""
    remove_tree(path)
    repo = MetadataRepo.init(path)
    changes = {manifest_path(f"proj-{n:06d}"): manifest(n, 3).dumps() for n in range(count)}
    start = time.perf_counter()
    first = repo.write_commit(changes, f"bench: {count} new projects")
    created = time.perf_counter() - start
    changes = {manifest_path(f"proj-{n:06d}"): manifest(n, 4).dumps() for n in range(count)}
    start = time.perf_counter()
    repo.write_commit(changes, f"bench: {count} projects changed", parent=first)
    updated = time.perf_counter() - start
    repo.close()
    return created, updated


def render_time(repo_path: Path, out: Path) -> tuple[float, str]:
    """Seconds to render every project's HTML and JSON page of the tip into ``out``.

    Uses ``gitmirror render`` when the CLI has it, else the same gitmirror.serve.index functions in-process.
    """
    remove_tree(out)
    help_text = subprocess.run([*GITMIRROR, "--help"], capture_output=True, text=True, env=quiet_env()).stdout
    if " render " in help_text:
        config = repo_path.parent / "render.yaml"
        config.write_text(f"repo: {repo_path}\nstore: {repo_path.parent / 'store'}\n")
        start = time.perf_counter()
        result = subprocess.run(
            [*GITMIRROR, "render", "--config", str(config), "--out", str(out), "--full", "--files", "none"],
            capture_output=True,
            text=True,
            env=quiet_env(),
            timeout=1800,
        )
        if result.returncode == 0:
            return time.perf_counter() - start, "`gitmirror render --out DIR --full --files none` (CLI, one process)"
        remove_tree(out)
    start = time.perf_counter()
    repo = MetadataRepo(repo_path)
    tip = repo.tip()
    (out / "simple").mkdir(parents=True)
    names = []
    for project in repo.manifests(tip):
        names.append(project.name)
        page_dir = out / "simple" / project.name
        page_dir.mkdir()
        (page_dir / "index.html").write_bytes(index.project_html(project))
        (page_dir / "index.json").write_bytes(index.project_json(project))
    names.sort()
    (out / "simple" / "index.html").write_bytes(index.root_html(names))
    (out / "simple" / "index.json").write_bytes(index.root_json(names))
    repo.close()
    return time.perf_counter() - start, "in-bench render with gitmirror.serve.index"


def run(workdir: Path, quick: bool) -> Table:
    sizes = (1_000, 2_000) if quick else (2_500, 5_000, 10_000)
    table = Table(
        f"Git scale: N = {', '.join(map(str, sizes))} projects (3-4 files each); "
        "peer column = time at N/2, ratio = growth when N doubles (2.0 = linear)"
    )
    measured: dict[int, tuple[float, float, float]] = {}
    how = ""
    for count in sizes:
        repo_path = workdir / f"git-scale-{count}" / "repo"
        created, updated = commit_times(repo_path, count)
        rendered, how = render_time(repo_path, workdir / f"git-scale-{count}" / "site")
        measured[count] = (created, updated, rendered)
        remove_tree(repo_path.parent)
    labels = ("commit of N new manifests", "commit of N changed manifests", "render of N projects")
    for position, label in enumerate(labels):
        previous = None
        for count in sizes:
            value = measured[count][position]
            table.rows.append(
                Row(
                    f"{label}, N={count:,}",
                    f"N={count // 2:,}" if previous else "-",
                    previous,
                    value,
                    "s",
                    note=f"{value / count * 1e6:.0f} us per project",
                )
            )
            previous = value
    table.notes.append(f"render measured with: {how}")
    table.notes.append(
        "pre-receive over a 1,000-commit push and verify over a 10,000-commit history: "
        "bench/verify_history.py (another engineer's)"
    )
    return table

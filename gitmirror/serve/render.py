"""Writing one state of the mirror as a static site: a full index with no gitmirror process running.

Layout of the output directory (pages from ``index``, so they match what ``serve`` answers):

- ``simple/index.html`` and ``simple/index.json`` (PEP 503 HTML and PEP 691 JSON);
- ``simple/<project>/index.html`` and ``simple/<project>/index.json``;
- ``files/<project>/<filename>`` (and ``<filename>.metadata``): links into the blob store, because
  installers take the filename from the URL and the store names blobs by sha256;
- ``.gitmirror-render.json``: the commit rendered and the settings, so the next render rewrites
  only the projects whose manifest changed since.

Rendering is deterministic (same commit and settings, same bytes) and every file is replaced
atomically, so a web server reading the directory never serves half a page. The state file is
removed before the first write and written after the last: an interrupted render makes the next
one a full render instead of trusting a half-updated directory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..model.manifest import ProjectManifest, manifest_path
from ..model.names import is_normalized
from ..storage.blobs import Blobs
from ..storage.gittree import TREE
from ..storage.repo import MetadataRepo
from ..storage.s3store import S3Store
from . import index
from .root_index import changed_projects, updated
from .site_writer import RenderError, Site, project_pages, read_manifest, write_if_changed, write_projects

STATE_FILE = ".gitmirror-render.json"
FILE_MODES = ("symlink", "hardlink", "copy", "bucket", "none")
DIRECTORY_MODES = ("symlink", "hardlink", "copy", "none")
BUCKET_MODES = ("copy", "bucket", "none")  # a store in a bucket has no file to link to
RELATIVE_FILES = "../../"


@dataclass
class RenderResult:
    commit: bytes
    projects: int
    rendered: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    pages_written: int = 0
    links_written: int = 0
    missing: list[str] = field(default_factory=list)
    full: bool = False

    def summary(self) -> str:
        kind = "full" if self.full else "incremental"
        text = (
            f"rendered {self.commit.decode()[:12]} ({kind}): {self.projects} projects, "
            f"{len(self.rendered)} re-rendered, {len(self.removed)} removed, "
            f"{self.pages_written} pages and {self.links_written} file links written"
        )
        if self.missing:
            text += f"; {len(self.missing)} blobs missing from the store (run `gitmirror hydrate`)"
        return text


def files_base(base_url: str | None) -> str:
    """The prefix of file URLs in pages: relative by default, else ``<base-url>files/...``."""
    if not base_url:
        return RELATIVE_FILES
    parts = urlsplit(base_url)
    if not (parts.scheme in ("http", "https") and parts.netloc) and not base_url.startswith("/"):
        raise RenderError(f"--base-url must be an http(s) URL or an absolute path, got {base_url!r}")
    return base_url if base_url.endswith("/") else base_url + "/"


def root_pages(names: list[str]) -> dict[str, bytes]:
    return {"simple/index.html": index.root_html(names), "simple/index.json": index.root_json(names)}


def _rendered_names(out: Path, added: set[str], removed: set[str]) -> list[str] | None:
    """The project list of the last render in ``out`` (its root JSON page) moved by a diff; None
    when that page cannot be read."""
    try:
        page = json.loads((out / "simple" / "index.json").read_bytes())
        return updated([project["name"] for project in page["projects"]], added, removed)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _manifest_blob(repo: MetadataRepo, commit: bytes, name: str) -> bytes | None:
    entry = repo.entry(commit, manifest_path(name))
    return entry[1] if entry is not None and entry[0] != TREE else None


def _manifest(repo: MetadataRepo, blobs: dict[str, bytes], name: str) -> ProjectManifest | None:
    blob_id = blobs.get(name)
    return None if blob_id is None else read_manifest(repo, name, blob_id)


def _commit_known(repo: MetadataRepo, hexsha: object) -> bool:
    if not isinstance(hexsha, str) or len(hexsha) != 40:
        return False
    try:
        repo.commit(hexsha.encode())
    except (KeyError, AssertionError):
        return False
    return True


# -- the static directory ----------------------------------------------------------------------


def render_site(
    repo: MetadataRepo,
    store: Blobs,
    commit: bytes,
    out: Path,
    base_url: str | None = None,
    files_mode: str = "symlink",
    full: bool = False,
) -> RenderResult:
    """Render ``commit`` into ``out``, rewriting only what changed since the previous render there."""
    if files_mode not in FILE_MODES:
        raise RenderError(f"--files must be one of {', '.join(FILE_MODES)}, got {files_mode!r}")
    allowed = BUCKET_MODES if isinstance(store, S3Store) else DIRECTORY_MODES
    if files_mode not in allowed:
        raise RenderError(f"--files must be one of {', '.join(allowed)} for this store, got {files_mode!r}")
    base = files_base(base_url)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RenderError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    where = store.location if isinstance(store, S3Store) else str(store.root.resolve())
    settings = {"base-url": base_url, "files": files_mode, "store": where}
    state = _read_state(out / STATE_FILE)
    previous = state.get("commit")
    if not full and state.get("settings") == settings and _commit_known(repo, previous):
        assert isinstance(previous, str)
        changed, removed = changed_projects(repo, previous.encode(), commit)
        added = {name for name in changed if _manifest_blob(repo, previous.encode(), name) is None}
        count = state.get("projects")
        names: list[str] | None = None  # the project list is read only when it moved
        if added or removed or not isinstance(count, int):
            names = _rendered_names(out, added, removed) or repo.projects(commit)
            count = len(names)
        stated = state.get("incomplete")
        changed |= {name for name in stated if isinstance(name, str)} if isinstance(stated, list) else set()
        result = RenderResult(commit=commit, projects=count)
        blobs = {name: blob for name in changed if (blob := _manifest_blob(repo, commit, name)) is not None}
    else:
        blobs = dict(repo.manifest_blobs(commit))
        names = sorted(blobs)
        result = RenderResult(commit=commit, projects=len(names), full=True)
        changed = set(names)
        removed = (_project_dirs(out / "simple") | _project_dirs(out / "files")) - set(names)
    (out / STATE_FILE).unlink(missing_ok=True)
    for name in sorted(removed):
        shutil.rmtree(out / "simple" / name, ignore_errors=True)
        shutil.rmtree(out / "files" / name, ignore_errors=True)
        result.removed.append(name)
    written = write_projects(repo, store, Site(out, base, files_mode), blobs)  # the changed projects' manifests
    result.rendered, result.pages_written, result.links_written = written.rendered, written.pages, written.links
    result.missing = written.missing
    for path, data in root_pages(names).items() if names is not None else ():
        result.pages_written += write_if_changed(out / path, data)
    state_data = {
        "commit": commit.decode(),
        "settings": settings,
        "incomplete": sorted(written.incomplete),
        "projects": result.projects,
    }
    write_if_changed(out / STATE_FILE, (json.dumps(state_data, indent=1, sort_keys=True) + "\n").encode())
    return result


def _read_state(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _project_dirs(root: Path) -> set[str]:
    """Project directories already rendered (only names gitmirror could have written)."""
    if not root.is_dir():
        return set()
    return {entry.name for entry in root.iterdir() if entry.is_dir() and is_normalized(entry.name)}


# -- the pages branch --------------------------------------------------------------------------


def render_branch(
    repo: MetadataRepo, commit: bytes, branch: str, base_url: str | None, protected: tuple[str, ...] = ()
) -> tuple[bytes | None, RenderResult]:
    """Commit the pages of ``commit`` to ``branch`` (pages only: a git host cannot serve the store).

    Returns the new commit (None when the branch already holds exactly these pages).
    """
    if branch in protected:
        raise RenderError(f"refusing to render pages onto branch {branch}: it holds the mirror's manifests")
    base = files_base(base_url)
    with repo.writer_lock():
        parent = repo.tip(branch)
        state = _branch_state(repo, parent)
        blobs = dict(repo.manifest_blobs(commit))
        names = sorted(blobs)
        result = RenderResult(commit=commit, projects=len(names))
        settings = {"base-url": base_url}
        previous = state.get("commit")
        if state.get("settings") == settings and _commit_known(repo, previous):
            assert isinstance(previous, str)
            changed, removed = changed_projects(repo, previous.encode(), commit)
        else:
            result.full = True
            changed = set(names)
            removed = _tree_dirs(repo, parent, "simple") - set(names)
        changes: dict[str, bytes | None] = {}
        for name in sorted(removed):
            changes[f"simple/{name}/index.html"] = None
            changes[f"simple/{name}/index.json"] = None
            result.removed.append(name)
        for name in sorted(changed):
            manifest = _manifest(repo, blobs, name)
            if manifest is not None:
                changes.update(project_pages(manifest, base))
                result.rendered.append(name)
        changes.update(root_pages(names))
        changes[".nojekyll"] = b""
        state_data = {"commit": commit.decode(), "settings": settings}
        changes[STATE_FILE] = (json.dumps(state_data, indent=1, sort_keys=True) + "\n").encode()
        changes = {path: data for path, data in changes.items() if repo.read_path(parent, path) != data}
        result.pages_written = sum(1 for path, data in changes.items() if data and path.startswith("simple/"))
        if not changes:
            return None, result
        message = f"render {commit.decode()[:12]}: {len(names)} projects\n\nsource: {commit.decode()}\n"
        return repo.write_commit(changes, message, branch=branch, parent=parent), result


def _branch_state(repo: MetadataRepo, commit: bytes | None) -> dict[str, object]:
    data = repo.read_path(commit, STATE_FILE)
    try:
        state = json.loads(data) if data else {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _tree_dirs(repo: MetadataRepo, commit: bytes | None, path: str) -> set[str]:
    return {name for name, (mode, _sha) in repo.list_dir(commit, path).items() if mode == TREE}

"""``gitmirror sync`` as a function, so that a plain run need not load the command-line machinery.

typer resolves every parameter through pydantic when a command is invoked: importing typer, the
command line and pydantic, then building the parameters, took 0.25-0.3 s before a cold sync sent
its first request, with one of the two cores otherwise idle (bench/RESULTS.md). The launcher calls
``main`` for a plain ``sync [--config PATH] [--quiet]``; ``gitmirror.cli`` calls ``run`` for every
other form of the command. Both report the same failures the same way (``failures``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from . import config as config_module
from .config import Config, Selection, parse_selection
from .failures import EXIT_USAGE, one_line
from .repo import MetadataRepo
from .store import BlobStore


def select(cfg: Config, requested: Sequence[str]) -> list[Selection]:
    """Projects named on the command line (with the config's version limits), else the config's."""
    if not requested:
        return list(cfg.projects)
    configured = {selection.name: selection for selection in cfg.projects}
    chosen = []
    for text in requested:
        selection = parse_selection(text, "command line")
        unconstrained = not selection.requirement.specifier
        chosen.append(configured.get(selection.name, selection) if unconstrained else selection)
    return chosen


def run(config_path: Path | None, projects: Sequence[str] = (), quiet: bool = False, as_json: bool = False) -> int:
    """Sync as the command does; returns its exit code (0 done, 1 failures, 3 conflicts)."""
    from .sync import Syncer

    cfg = config_module.load(config_path)
    selections = select(cfg, projects)
    if not selections and (projects or not (cfg.requirements or cfg.lockfiles)):
        print("nothing to mirror: list projects in mirror.yaml or on the command line", flush=True)
        return 0
    repo = MetadataRepo.init(cfg.repo, cfg.branch)
    from .incoming import sync_branch

    branch = sync_branch(repo, cfg.branch, cfg.review.branch if cfg.review.enabled else None)
    from .progress import make_progress, summary_json

    progress = make_progress(quiet=quiet, as_json=as_json)
    syncer = Syncer(cfg, repo, BlobStore(cfg.store), log=progress.log, progress=progress)
    if branch != cfg.branch:
        syncer.notices.append(f"review mode: committing to {branch}; `gitmirror review` shows what waits")
    try:
        result = syncer.run(selections, branch=branch, with_files=not projects)
    finally:
        progress.close()
    if as_json:
        import json

        print(json.dumps(summary_json(result, progress, syncer.pages, syncer.warnings), indent=2), flush=True)
    elif not quiet:
        print(result.summary(), flush=True)
    return result.exit_code


def main(config_path: Path | None, quiet: bool) -> int:
    """The launcher's plain ``sync``: known failures in one line, exit code 2 (as ``gitmirror.cli``)."""
    try:
        return run(config_path, quiet=quiet)
    except Exception as exc:
        line = one_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("Aborted!", file=sys.stderr, flush=True)  # what the command line says
        return 1

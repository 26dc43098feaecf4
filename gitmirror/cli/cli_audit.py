"""``gitmirror install-hook``, ``verify`` and ``status``: guarding the history and saying what the
mirror holds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from . import cli_sign
from .cli_common import ConfigOption, RevOption, load_config, open_repo, snapshot_of


def install_hook(
    bare_repo: Annotated[
        Path | None, typer.Argument(help="Bare repository that receives pushes (default: the configured repo).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a pre-receive hook that is not gitmirror's.")] = False,
    config: ConfigOption = None,
) -> None:
    """Install the pre-receive hook that refuses force pushes, deletions and policy violations."""
    from ..audit.hooks import install

    target = bare_repo if bare_repo is not None else load_config(config).repo
    hook = install(target, sys.executable, force=force)
    typer.echo(f"installed {hook} (runs {sys.executable}); receive.denyNonFastForwards and denyDeletes set")


def verify(
    rev: Annotated[str | None, typer.Option("--rev", help="Branch, tag or commit to verify (default: main).")] = None,
    repo_path: Annotated[
        Path | None, typer.Option("--repo", help="Repository to verify instead of the configured one (a clone).")
    ] = None,
    history_only: Annotated[
        bool, typer.Option("--history-only", help="Check the git history only, not the blob store.")
    ] = False,
    keys: cli_sign.KeysOption = None,
    signed_from: cli_sign.SignedFromOption = None,
    checkpoint: cli_sign.CheckpointOption = None,
    witness_keys: cli_sign.WitnessKeysOption = None,
    min_witnesses: cli_sign.MinWitnessesOption = 0,
    state: cli_sign.StateOption = None,
    config: ConfigOption = None,
) -> None:
    """Check every commit of the history against the policy and every served blob against its sha256.

    With --keys, every commit and tag must be signed by a key of that allowed_signers file; with
    --checkpoint, the mirror's signed checkpoint must name a commit of this clone that extends every
    checkpoint seen before, and the history verified is the one it names (docs/signing.md).

    Exit codes: 0 everything holds, 1 problems found (the first ones are listed).
    """
    from ..audit.verify import verify as run_verify
    from ..storage.repo import MetadataRepo
    from ..sync.store_config import open_store

    cfg = load_config(config)
    repo = MetadataRepo(repo_path) if repo_path is not None else open_repo(cfg)
    if checkpoint is not None:
        accepted = cli_sign.check_checkpoint(repo, cfg, checkpoint, keys, witness_keys, min_witnesses, state)
        rev = rev or accepted.checkpoint.commit
    report = run_verify(repo, None if history_only else open_store(cfg), rev or cfg.branch)
    for line in report.listing():
        typer.echo(line)
    typer.echo(report.summary())
    signed = keys is None or cli_sign.check_signatures(repo, repo.resolve(rev or cfg.branch), keys, cfg, signed_from)
    if not (report.ok and signed):
        raise typer.Exit(1)


def status(
    rev: RevOption = None,
    verify_blobs: Annotated[
        bool, typer.Option("--verify", help="Re-hash every blob instead of checking it exists.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """What is in the mirror: tip, last sync, projects, files, bytes, blobs missing from the store."""
    import json

    from ..audit.status import collect
    from ..sync.store_config import open_store

    cfg = load_config(config)
    repo = open_repo(cfg)
    commit = snapshot_of(repo, rev, cfg) if rev is not None else repo.tip(cfg.branch)
    review = cfg.review.branch if cfg.review.enabled else None
    report = collect(repo, open_store(cfg), commit, cfg.branch, verify=verify_blobs, review_branch=review)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)

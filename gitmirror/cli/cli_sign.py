"""Signed history on the command line: ``verify --keys/--checkpoint``, ``checkpoint-key``, ``witness
cosign/key``, ``check-lock``.

The mirror's side (signing every commit and tag, ``/checkpoint``) needs no command: ``init
--signing-key`` or ``signing:`` in mirror.yaml switch it on (docs/signing.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .cli_common import ConfigOption, fail, friendly_errors, load_config

if TYPE_CHECKING:
    from ..audit.checkpoints import Accepted
    from ..model.ssh_signatures import AllowedSigners
    from ..storage.repo import MetadataRepo
    from ..sync.config import Config
    from ..sync.signing_config import SigningSettings

KeysOption = Annotated[
    Path | None,
    typer.Option("--keys", help="allowed_signers file of the mirror's keys (default: signing.allowed_signers)."),
]
CheckpointOption = Annotated[
    str | None, typer.Option("--checkpoint", help="The mirror's checkpoint: its URL, or a file holding the note.")
]
SignedFromOption = Annotated[
    str | None,
    typer.Option("--signed-from", help="With --keys: the first commit that must be signed (earlier ones need not)."),
]
WitnessKeysOption = Annotated[
    Path | None, typer.Option("--witness-keys", help="allowed_signers file of the witnesses (principal = name).")
]
MinWitnessesOption = Annotated[
    int, typer.Option("--min-witnesses", min=0, help="Cosignatures required from --witness-keys.")
]
StateOption = Annotated[
    Path | None,
    typer.Option("--state", help="Checkpoints seen before (default: $XDG_STATE_HOME/gitmirror/checkpoints.json)."),
]
RepoOption = Annotated[
    Path | None, typer.Option("--repo", help="The clone to check against (default: the configured repo).")
]


def apply_signing(repo: MetadataRepo, settings: SigningSettings, key: Path | None = None) -> None:
    """Write mirror.yaml's ``signing:`` (and ``key`` of ``init --signing-key``) into the repository's
    git config, where every writer reads it; unchanged settings are not written again."""
    key = key or settings.key
    if key is None and settings.allowed_signers is None:
        return
    policy = repo.signing_policy()
    wanted = (
        key.resolve() if key else policy.key,
        settings.allowed_signers.resolve() if settings.allowed_signers else policy.allowed_signers,
        settings.require_signed_main or policy.require_signed_main,
    )
    if wanted != (policy.key, policy.allowed_signers, policy.require_signed_main):
        repo.configure_signing(*wanted)


def allowed_signers(path: Path | None, cfg: Config, what: str = "--keys") -> AllowedSigners:
    from ..audit.signatures import load_allowed_signers
    from ..model.ssh_signatures import AllowedSignersError

    path = path or cfg.signing.allowed_signers
    if path is None:
        raise fail(f"{what} FILE is needed: the allowed_signers file of the keys to trust")
    try:
        return load_allowed_signers(path)
    except AllowedSignersError as exc:
        raise fail(str(exc)) from None


def check_checkpoint(
    repo: MetadataRepo,
    cfg: Config,
    source: str,
    keys: Path | None,
    witness_keys: Path | None = None,
    min_witnesses: int = 0,
    state: Path | None = None,
    report_to_stderr: bool = False,
) -> Accepted:
    """``checkpoints.accept`` with its one line printed (on stderr when stdout carries a note); a
    failed check exits 1 (a fork, loudly)."""
    from ..audit.checkpoints import CheckpointError, ForkError, SeenCheckpoints, accept, default_state, read_note

    if min_witnesses and witness_keys is None:
        raise fail("--min-witnesses needs --witness-keys FILE: the allowed_signers file of the witnesses")
    mirror_keys = allowed_signers(keys, cfg)
    witnesses = allowed_signers(witness_keys, cfg, "--witness-keys") if witness_keys else None
    try:
        seen = SeenCheckpoints(state or default_state())
        accepted = accept(repo, read_note(source), mirror_keys, seen, witnesses, min_witnesses)
    except ForkError as exc:
        typer.echo(f"gitmirror: {exc}", err=True)
        typer.echo(
            "gitmirror: the mirror signed a history that contradicts one it signed before: do not trust it", err=True
        )
        raise typer.Exit(1) from None
    except CheckpointError as exc:
        typer.echo(f"gitmirror: checkpoint refused: {exc}", err=True)
        raise typer.Exit(1) from None
    cp = accepted.checkpoint
    cosigned = f", cosigned by {', '.join(accepted.witnesses)}" if accepted.witnesses else ""
    typer.echo(f"checkpoint: {cp.origin} at {cp.commit[:12]} ({cp.size} commits) holds{cosigned}", err=report_to_stderr)
    return accepted


def check_signatures(
    repo: MetadataRepo, tip: bytes, keys: Path | None, cfg: Config, signed_from: str | None = None
) -> bool:
    from ..audit.signatures import verify_signatures

    first = repo.resolve(signed_from) if signed_from is not None else None
    report = verify_signatures(repo, tip, allowed_signers(keys, cfg), first)
    for line in report.lines():
        typer.echo(line)
    typer.echo(report.summary())
    return report.ok


def cosign(
    checkpoint: CheckpointOption = None,
    key: Annotated[Path | None, typer.Option("--key", help="The witness's Ed25519 OpenSSH private key.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The witness's name on its signature line.")] = None,
    keys: KeysOption = None,
    repo_path: RepoOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the cosigned note here (default: stdout).")] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Checkpoints witnessed before (default: <state dir>/gitmirror/witnessed.json)."),
    ] = None,
    submit: Annotated[
        bool, typer.Option("--submit", help="Hand the cosignature to the mirror (POST <checkpoint>/cosignature).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Cosign a mirror's checkpoint after checking it against a clone and the last one witnessed."""
    from ..audit.checkpoints import cosign as add_cosignature
    from ..audit.checkpoints import default_state
    from ..model.signed_note import check_name
    from ..storage.repo import MetadataRepo
    from ..storage.signing import check_key

    if checkpoint is None or key is None or name is None:
        raise fail("witness cosign needs --checkpoint, --key and --name")
    if submit and not checkpoint.startswith(("http://", "https://")):
        raise fail("--submit needs --checkpoint URL: the mirror the cosignature goes to")
    check_name(name)  # a bad name: one line (NoteError is a known failure)
    cfg = load_config(config)
    private_key = check_key(key)
    repo = MetadataRepo(repo_path or cfg.repo)
    witnessed = state or default_state("witnessed")
    accepted = check_checkpoint(repo, cfg, checkpoint, keys, state=witnessed, report_to_stderr=out is None)
    note = add_cosignature(accepted, name, private_key).render()
    if out is None:
        typer.echo(note, nl=False)
    else:
        try:
            out.write_text(note, encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot write the cosigned note to {out}: {exc.strerror}") from None
    if submit:
        from ..audit.checkpoints import CheckpointError, submit_cosignature

        try:
            typer.echo(f"gitmirror: the mirror answered: {submit_cosignature(checkpoint, note)}", err=True)
        except CheckpointError as exc:
            typer.echo(f"gitmirror: cosignature not taken: {exc}", err=True)
            raise typer.Exit(1) from None


def check_lock(
    lockfile: Annotated[Path, typer.Argument(help="The PEP 751 pylock.toml to check.")],
    index: Annotated[
        str | None, typer.Option("--index", help="The mirror's index URL; its checkpoint is <root>/checkpoint.")
    ] = None,
    checkpoint: CheckpointOption = None,
    keys: KeysOption = None,
    repo_path: RepoOption = None,
    witness_keys: WitnessKeysOption = None,
    min_witnesses: MinWitnessesOption = 0,
    state: StateOption = None,
    config: ConfigOption = None,
) -> None:
    """Check that every file a lockfile pins is in a signed, checkpointed state of the mirror.

    Exit codes: 0 every locked file is there, 1 some are not or the checkpoint does not hold.
    """
    from ..audit.checkpoints import checkpoint_url
    from ..audit.locks import locked_files, unlisted_pins
    from ..storage.repo import MetadataRepo

    if (index is None) == (checkpoint is None):
        raise fail("check-lock needs one of --index URL or --checkpoint URL|FILE")
    source = checkpoint or checkpoint_url(index or "")
    cfg = load_config(config)
    locked = locked_files(lockfile)  # a bad lockfile fails before any checkpoint is fetched or remembered
    for warning in locked.warnings:
        typer.echo(f"gitmirror: warning: {warning}; the mirror cannot vouch for it", err=True)
    repo = MetadataRepo(repo_path or cfg.repo)
    accepted = check_checkpoint(repo, cfg, source, keys, witness_keys, min_witnesses, state)
    missing, total = unlisted_pins(repo, accepted.checkpoint.commit.encode(), locked)
    for line in missing:
        typer.echo(line)
    if missing:
        typer.echo(f"{len(missing)} of {total} locked files are not in the checkpointed state")
        raise typer.Exit(1)
    typer.echo(f"all {total} locked files are in the checkpointed state {accepted.checkpoint.commit[:12]}")


def checkpoint_key(config: ConfigOption = None) -> None:
    """Print the verifier key of the mirror's checkpoint, as Go's ``note`` package and C2SP tools read it.

    Publish it beside the allowed_signers line: a client that checks notes with those tools needs it.
    """
    from ..model.signed_note import verifier_key
    from ..storage.checkpoint import default_origin
    from ..storage.repo import MetadataRepo
    from ..storage.signing import check_key

    cfg = load_config(config)
    key_path = cfg.signing.key or MetadataRepo(cfg.repo).signing_policy().key
    if key_path is None:
        raise fail("this mirror has no signing key: set signing.key in mirror.yaml or run init --signing-key")
    public_key = check_key(key_path).public_key()
    typer.echo(verifier_key(cfg.signing.name or default_origin(public_key), public_key))


def witness_key(
    key: Annotated[Path, typer.Option("--key", help="The witness's Ed25519 OpenSSH private key.")],
    name: Annotated[str, typer.Option("--name", help="The witness's name on its signature line.")],
) -> None:
    """Print the witness's C2SP verifier key (cosignature/v1) for ``name``."""
    from ..model.cosignature import verifier_key
    from ..model.signed_note import check_name
    from ..storage.signing import check_key

    check_name(name)  # a bad name: one line (NoteError is a known failure)
    typer.echo(verifier_key(name, check_key(key).public_key()))


witness_app = typer.Typer(help="Witness a mirror: cosign its checkpoints after checking them.", no_args_is_help=True)
witness_app.command("cosign")(friendly_errors(cosign))
witness_app.command("key")(friendly_errors(witness_key))

"""Published checkpoints: ``/checkpoint`` states the tip, ``verify --checkpoint`` proves a clone holds
it and that it extends what the client saw before, witnesses cosign, ``check-lock`` checks a lockfile."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from gitmirror.model import cosignature, signed_note

from conftest import Mirror, RunningServer, isolated_env, start_server, stop_server
from sshkeys import allowed_signers, git, make_key

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="OpenSSH's ssh-keygen is not installed")

ORIGIN = "mirror.test/simple"


@pytest.fixture
def signed(mirror: Mirror, sample: dict, tmp_path: Path) -> tuple[Mirror, Path]:
    """A synced mirror signing with its own key, published as ORIGIN; returns it and its allowed_signers."""
    key = make_key(tmp_path, "mirror-key")
    (tmp_path / "cosigned").mkdir()
    mirror.configure(
        f"projects: [demo-pkg]\nsigning:\n  key: {key}\n  name: {ORIGIN}\n  cosignatures: {tmp_path / 'cosigned'}\n"
    )
    mirror.run("sync", check=True)
    return mirror, allowed_signers(tmp_path, ("mirror", key))


def client(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``gitmirror`` run by a client with its own state file, outside any mirror directory."""
    where = tmp_path / "client"
    where.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "gitmirror", *args],
        cwd=where,
        env=isolated_env(XDG_STATE_HOME=str(tmp_path / "client-state")),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_served_checkpoint_states_the_tip_and_follows_each_commit(signed, serve, tmp_path: Path):
    mirror, allowed = signed
    server: RunningServer = serve()
    response = httpx.get(server.url + "/checkpoint")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    note = signed_note.parse(response.content)
    checkpoint = signed_note.parse_checkpoint(note.text)
    assert (checkpoint.origin, checkpoint.size) == (ORIGIN, 1)
    assert checkpoint.commit == mirror.git("rev-parse", "main").strip()
    key = load_ssh_public_key(Path(str(allowed).replace("allowed_signers", "mirror-key.pub")).read_bytes())
    assert signed_note.verified_by(note, ORIGIN, key)  # type: ignore[arg-type]
    assert httpx.get(server.url + "/checkpoint").content == response.content  # one tip, one note
    mirror.run("yank", "demo-pkg", "1.0", "--reason", "broken", check=True)
    moved = signed_note.parse_checkpoint(signed_note.parse(httpx.get(server.url + "/checkpoint").content).text)
    assert moved.size == 2 and moved.commit == mirror.git("rev-parse", "main").strip()


def test_a_client_accepts_the_checkpoint_of_its_clone_and_detects_a_forked_history(signed, serve, tmp_path: Path):
    mirror, allowed = signed
    fork_root = tmp_path / "fork"
    shutil.copytree(mirror.root, fork_root)  # the same mirror, about to make other commits
    server = serve()
    clone = tmp_path / "clone"
    git("clone", "-q", str(mirror.repo), str(clone), cwd=tmp_path)
    verify = ("verify", "--repo", str(clone), "--history-only", "--keys", str(allowed), "--checkpoint", server.url)
    first_note = tmp_path / "first.note"
    first_note.write_bytes(httpx.get(server.url + "/checkpoint").content)
    accepted = client(tmp_path, *verify)
    assert accepted.returncode == 0, accepted.stderr
    assert f"checkpoint: {ORIGIN} at " in accepted.stdout and "(1 commits) holds" in accepted.stdout
    # The mirror moves on; a client whose clone lacks the new tip cannot accept it until it fetches.
    mirror.run("yank", "demo-pkg", "1.0", "--reason", "broken", check=True)
    behind = client(tmp_path, *verify)
    assert behind.returncode == 1 and "does not contain the published tip" in behind.stderr
    git("fetch", "-q", "origin", cwd=clone)
    assert client(tmp_path, *verify).returncode == 0
    witness_key = make_key(tmp_path, "witness-key")
    witness = ("witness", "cosign", "--key", str(witness_key), "--name", "witness.test", "--keys", str(allowed))
    assert client(tmp_path, *witness, "--repo", str(clone), "--checkpoint", server.url).returncode == 0
    # The fork: the same policy-valid change made again (other commits), signed by the same key.
    (Mirror(fork_root, mirror.upstream)).run("yank", "demo-pkg", "1.0", "--reason", "broken!", check=True)
    forked = start_server(fork_root)
    try:
        other_clone = tmp_path / "other-clone"
        git("clone", "-q", str(fork_root / "mirror" / "repo"), str(other_clone), cwd=tmp_path)
        fork_args = ("verify", "--repo", str(other_clone), "--history-only", "--keys", str(allowed))
        detected = client(tmp_path, *fork_args, "--checkpoint", forked.url + "/checkpoint")
        not_cosigned = client(tmp_path, *witness, "--repo", str(other_clone), "--checkpoint", forked.url)
    finally:
        stop_server(forked)
    assert detected.returncode == 1
    assert f"gitmirror: FORK: {ORIGIN}'s checkpoint (size 2, commit " in detected.stderr
    assert "does not extend the one seen before (size 2" in detected.stderr
    assert not_cosigned.returncode == 1 and not not_cosigned.stdout and "FORK" in not_cosigned.stderr
    state = json.loads((tmp_path / "client-state" / "gitmirror" / "checkpoints.json").read_text())
    assert len(state["forks"]) == 1 and state["forks"][0]["seen"] != state["forks"][0]["new"]  # the evidence
    # A note not signed by the trusted key is refused before anything is compared.
    stranger = allowed_signers(tmp_path / "client", ("x", make_key(tmp_path, "stranger")))
    untrusted = client(tmp_path, *verify[:-4], "--keys", str(stranger), "--checkpoint", server.url)
    assert untrusted.returncode == 1 and "is not signed by a key of" in untrusted.stderr
    # An older checkpoint replayed (a mirror frozen in its past) is a rollback, as loud as a fork.
    rolled_back = client(tmp_path, *verify[:-1], str(first_note))
    assert rolled_back.returncode == 1, rolled_back.stderr
    assert f"gitmirror: ROLLBACK: {ORIGIN}'s checkpoint (size 1, commit " in rolled_back.stderr
    assert "goes back behind the one seen before (size 2" in rolled_back.stderr


def test_witness_cosignature_round_trip(signed, serve, tmp_path: Path):
    mirror, allowed = signed
    server = serve()
    witness_key = make_key(tmp_path, "witness-key")
    (tmp_path / "w").mkdir()
    witnesses = allowed_signers(tmp_path / "w", ("witness.test", witness_key))
    clone = tmp_path / "witness-clone"
    git("clone", "-q", str(mirror.repo), str(clone), cwd=tmp_path)
    cosigned = tmp_path / "cosigned" / "witness.note"
    witness = ("witness", "cosign", "--checkpoint", server.url, "--key", str(witness_key), "--name", "witness.test")
    done = client(tmp_path, *witness, "--keys", str(allowed), "--repo", str(clone), "--out", str(cosigned))
    assert done.returncode == 0, done.stderr
    nowhere = client(tmp_path, *witness, "--keys", str(allowed), "--repo", str(clone), "--out", str(tmp_path / "no/x"))
    assert nowhere.returncode == 2 and nowhere.stderr.startswith("gitmirror: error: cannot write the cosigned note")
    assert nowhere.stderr.count("\n") == 1
    no_state = client(tmp_path, *witness, "--keys", str(allowed), "--repo", str(clone), "--state", "/proc/gm/w.json")
    assert no_state.returncode == 1 and no_state.stderr.count("\n") == 1, no_state.stderr
    assert no_state.stderr.startswith("gitmirror: checkpoint refused: cannot write the checkpoints seen (/proc/gm/")
    note = signed_note.parse(cosigned.read_bytes())
    assert [s.name for s in note.signatures] == [ORIGIN, "witness.test"]
    # The witness's line is a C2SP cosignature/v1, dated now.
    witness_public = load_ssh_public_key(Path(str(witness_key) + ".pub").read_bytes())
    assert isinstance(witness_public, Ed25519PublicKey)
    printed = client(tmp_path, "witness", "key", "--key", str(witness_key), "--name", "witness.test")
    assert printed.stdout.strip() == cosignature.verifier_key("witness.test", witness_public), printed.stderr
    cosigned_at = cosignature.cosigned_at(note, "witness.test", witness_public)
    assert cosigned_at is not None and abs(cosigned_at - time.time()) < 120
    assert not signed_note.verified_by(note, "witness.test", witness_public)
    # The mirror serves the cosignature it was handed beside its own; clients can require it.
    served = httpx.get(server.url + "/checkpoint").text
    assert served == cosigned.read_text()
    verify = ("verify", "--repo", str(clone), "--history-only", "--keys", str(allowed), "--checkpoint", server.url)
    required = client(tmp_path, *verify, "--witness-keys", str(witnesses), "--min-witnesses", "1")
    assert required.returncode == 0 and "cosigned by witness.test" in required.stdout, required.stderr
    keyless = client(tmp_path, *verify, "--min-witnesses", "1")
    assert keyless.returncode == 2 and keyless.stderr.startswith(
        "gitmirror: error: --min-witnesses needs --witness-keys"
    )
    too_many = client(tmp_path, *verify, "--witness-keys", str(witnesses), "--min-witnesses", "2")
    assert too_many.returncode == 1 and "1 valid cosignature(s)" in too_many.stderr and "2 required" in too_many.stderr
    garbage = tmp_path / "garbage.note"
    garbage.write_bytes(b"\xff\xfe not a note")
    refused = client(tmp_path, *verify[:-1], str(garbage))
    assert refused.returncode == 1 and refused.stderr == "gitmirror: checkpoint refused: note: not UTF-8\n"
    # A plain signed-note signature by the witness's key is no cosignature.
    witness_private = load_ssh_private_key(witness_key.read_bytes(), password=None)
    assert isinstance(witness_private, Ed25519PrivateKey)
    plain = note.with_signature(signed_note.sign(note.text, "witness.test", witness_private))
    cosigned.write_text(signed_note.Note(note.text, (note.signatures[0], plain.signatures[-1])).render())
    not_cosigned = client(tmp_path, *verify, "--witness-keys", str(witnesses), "--min-witnesses", "1")
    assert not_cosigned.returncode == 1 and "0 valid cosignature(s)" in not_cosigned.stderr
    # A cosignature dated in the future does not count.
    future = cosignature.cosign(note.text, "witness.test", witness_private, int(time.time()) + 3600)
    cosigned.write_text(note.with_signature(future).render())
    assert client(tmp_path, *verify, "--witness-keys", str(witnesses), "--min-witnesses", "1").returncode == 1
    cosigned.write_text(note.render())
    # A cosignature on another text does not count.
    cosigned.write_text(cosigned.read_text().replace(f"{ORIGIN}\n1\n", f"{ORIGIN}\n9\n", 1))
    assert client(tmp_path, *verify, "--witness-keys", str(witnesses), "--min-witnesses", "1").returncode == 1


def test_a_witness_submits_its_cosignature_and_the_mirror_keeps_only_valid_ones(mirror, sample, serve, tmp_path):
    key, witness_key = make_key(tmp_path, "mirror-key"), make_key(tmp_path, "witness-key")
    (tmp_path / "w").mkdir()
    witnesses = allowed_signers(tmp_path / "w", ("witness.test", witness_key))
    kept = tmp_path / "kept"
    mirror.configure(
        f"projects: [demo-pkg]\nsigning:\n  key: {key}\n  name: {ORIGIN}\n"
        f"  cosignatures: {kept}\n  witnesses: {witnesses}\n"
    )
    mirror.run("sync", check=True)
    allowed = allowed_signers(tmp_path, ("mirror", key))
    server = serve()
    clone = tmp_path / "witness-clone"
    git("clone", "-q", str(mirror.repo), str(clone), cwd=tmp_path)
    witness = ("witness", "cosign", "--checkpoint", server.url, "--key", str(witness_key), "--name", "witness.test")
    done = client(tmp_path, *witness, "--keys", str(allowed), "--repo", str(clone), "--submit")
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith(
        " (1 commits) holds\n"  # the check's line; stdout carries the note alone
        "gitmirror: the mirror answered: kept the cosignature of witness.test for checkpoint size 1\n"
    )
    assert (
        signed_note.parse(done.stdout.encode()).text
        == signed_note.parse(httpx.get(server.url + "/checkpoint").content).text
    )
    assert len(list(kept.glob("*.note"))) == 1
    verify = ("verify", "--repo", str(clone), "--history-only", "--keys", str(allowed), "--checkpoint", server.url)
    required = client(tmp_path, *verify, "--witness-keys", str(witnesses), "--min-witnesses", "1")
    assert required.returncode == 0 and "cosigned by witness.test" in required.stdout, required.stderr
    # What the mirror refuses, each in one line, keeping nothing.
    submit = server.url + "/checkpoint/cosignature"
    cosigned = signed_note.parse(done.stdout.encode())
    stranger = load_ssh_private_key(make_key(tmp_path, "stranger").read_bytes(), password=None)
    assert isinstance(stranger, Ed25519PrivateKey)
    now = int(time.time())
    impostor = signed_note.Note(cosigned.text, (cosignature.cosign(cosigned.text, "witness.test", stranger, now),))
    unknown = signed_note.Note(cosigned.text, (cosignature.cosign(cosigned.text, "other.test", stranger, now),))
    refused = {
        "impostor": httpx.post(submit, content=impostor.render()),
        "unknown": httpx.post(submit, content=unknown.render()),
        "garbage": httpx.post(submit, content=b"\xff not a note"),
        "huge": httpx.post(submit, content=b"x" * (64 * 1024 + 1)),
    }
    assert {name: answer.status_code for name, answer in refused.items()} == {
        "impostor": 403,
        "unknown": 403,
        "garbage": 400,
        "huge": 413,
    }
    assert refused["impostor"].text == "no valid cosignature by a witness of signing.witnesses\n"  # no server path
    assert all(str(tmp_path) not in answer.text for answer in refused.values())
    assert all(answer.text.count("\n") == 1 for answer in refused.values())
    mirror.run("yank", "demo-pkg", "1.0", "--reason", "broken", check=True)
    stale = httpx.post(submit, content=cosigned.render())
    assert stale.status_code == 409 and "not this mirror's current checkpoint (size 2, commit" in stale.text
    # The witness's next cosignature replaces its last: one note per witness.
    git("fetch", "-q", "origin", cwd=clone)
    again = client(tmp_path, *witness, "--keys", str(allowed), "--repo", str(clone), "--submit")
    assert again.returncode == 0 and "for checkpoint size 2" in again.stderr, again.stderr
    assert [signed_note.parse(p.read_bytes()).text for p in kept.glob("*.note")] == [
        signed_note.parse(again.stdout.encode()).text
    ]
    local = client(tmp_path, *witness[:2], "--checkpoint", str(tmp_path / "first.note"), *witness[4:], "--submit")
    assert local.returncode == 2 and "--submit needs --checkpoint URL" in local.stderr


def test_a_mirror_without_witnesses_takes_no_cosignature(signed, serve, tmp_path: Path):
    mirror, allowed = signed
    server = serve()
    answer = httpx.post(server.url + "/checkpoint/cosignature", content=httpx.get(server.url + "/checkpoint").content)
    assert answer.status_code == 404
    assert answer.text == "this mirror takes no cosignatures: signing.witnesses is not set\n"
    clone = tmp_path / "witness-clone"
    git("clone", "-q", str(mirror.repo), str(clone), cwd=tmp_path)
    witness_key = make_key(tmp_path, "witness-key")
    witness = ("witness", "cosign", "--checkpoint", server.url, "--key", str(witness_key), "--name", "witness.test")
    done = client(tmp_path, *witness, "--keys", str(allowed), "--repo", str(clone), "--submit")
    assert done.returncode == 1 and done.stderr.count("\n") == 2, done.stderr  # the check's line, then why
    assert (
        done.stderr.splitlines()[1].startswith("gitmirror: cosignature not taken: ") and "answered 404" in done.stderr
    )
    # An unreadable witnesses file stops serve before it starts, in one line.
    missing = tmp_path / "missing"
    mirror.configure(f"projects: [demo-pkg]\nsigning:\n  cosignatures: {tmp_path}\n  witnesses: {missing}\n")
    refused = mirror.run("serve", "--port", "1", timeout=60)
    assert refused.returncode == 2
    assert refused.stderr == (
        f"gitmirror: error: cannot read allowed signers file {missing}: No such file or directory\n"
    )


def test_check_lock_finds_every_locked_file_in_the_checkpointed_state(signed, serve, sample, tmp_path: Path):
    mirror, allowed = signed
    server = serve()
    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.0-py3-none-any.whl")
    digest = hashlib.sha256(wheel.data).hexdigest()
    lock = tmp_path / "client" / "pylock.toml"
    lock.parent.mkdir(exist_ok=True)

    def write_lock(sha: str) -> None:
        lock.write_text(
            'lock-version = "1.0"\ncreated-by = "tests"\n\n[[packages]]\nname = "demo-pkg"\nversion = "1.0"\n'
            f'wheels = [{{ name = "{wheel.filename}", url = "{server.url}/files/demo-pkg/{wheel.filename}", '
            f'hashes = {{ sha256 = "{sha}" }} }}]\n'
        )

    # A lock made by a real locker against the mirror: its wheel and sdist are both in the signed state.
    requirements = lock.parent / "requirements.in"
    requirements.write_text("demo-pkg==1.0\n")
    uv = Path(sys.executable).parent / "uv"
    compile_lock = [str(uv) if uv.exists() else "uv", "pip", "compile", str(requirements), "-o", str(lock)]
    locked = subprocess.run(
        [*compile_lock, "--index-url", server.index_url, "--python-version", "3.11"],
        env=isolated_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert locked.returncode == 0 and f'sha256 = "{digest}"' in lock.read_text(), locked.stderr
    args = ("check-lock", str(lock), "--index", server.index_url, "--keys", str(allowed), "--repo", str(mirror.repo))
    ok = client(tmp_path, *args)
    assert ok.returncode == 0 and "all 2 locked files are in the checkpointed state" in ok.stdout, ok.stderr
    write_lock("ab" * 32)
    missing = client(tmp_path, *args)
    assert missing.returncode == 1 and f"{wheel.filename} (sha256 abababab" in missing.stdout
    assert "not in the mirror's state" in missing.stdout and "1 of 1 locked files" in missing.stdout
    # A package not from an index is named (the mirror cannot vouch for it); a taken-down file fails.
    write_lock(digest)
    vcs = '{ type = "git", url = "https://vcs.invalid/tool", commit-id = "0123abcd" }'
    lock.write_text(lock.read_text() + f'\n[[packages]]\nname = "tool"\nvcs = {vcs}\n')
    mirror.run("takedown", wheel.filename, "--reason", "malware", check=True)
    taken = client(tmp_path, *args)
    assert taken.returncode == 1 and f"{wheel.filename} (sha256 {digest[:16]}...): taken down (malware)" in taken.stdout
    assert taken.stderr.startswith("gitmirror: warning: ") and "tool is not from an index" in taken.stderr
    # A lockfile that is no PEP 751 lock is one line, before any checkpoint is fetched or remembered.
    lock.write_text('lock-version = "1.0"\n[[packages]]\nname = "demo-pkg"\n')
    state = tmp_path / "fresh-state.json"
    bad = client(tmp_path, *args, "--state", str(state))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("gitmirror: error: lockfile ")
    assert not bad.stdout and not state.exists()


@pytest.fixture(scope="session")
def gonote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/gonote built once: the Go reference parser of signed notes (golang.org/x/mod/sumdb/note)."""
    if shutil.which("go") is None:
        pytest.skip("Go is not installed (Debian: golang-go)")
    built = tmp_path_factory.mktemp("gonote")
    gopath = "/usr/share/gocode"  # where Debian's golang-golang-x-mod-dev puts the package
    env = isolated_env(GO111MODULE="off", GOPATH=gopath, GOCACHE=str(built / "cache"), GOFLAGS="")
    source = Path(__file__).parent / "gonote" / "main.go"
    result = subprocess.run(["go", "build", "-o", str(built / "gonote"), str(source)], env=env, capture_output=True)
    if result.returncode != 0 and b"cannot find package" in result.stderr:
        pytest.skip("golang.org/x/mod is not installed (Debian: golang-golang-x-mod-dev)")
    assert result.returncode == 0, result.stderr.decode()
    return built / "gonote"


def go_open(gonote: Path, note: bytes, *verifier_keys: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(gonote), *verifier_keys], input=note, capture_output=True, timeout=30)


def test_the_go_reference_parser_opens_the_served_and_the_cosigned_checkpoint(signed, serve, gonote, tmp_path):
    mirror, allowed = signed
    server = serve()
    served = httpx.get(server.url + "/checkpoint").content
    mirror_key = load_ssh_public_key((tmp_path / "mirror-key.pub").read_bytes())
    assert isinstance(mirror_key, Ed25519PublicKey)
    verifier = mirror.run("checkpoint-key", check=True).stdout.strip()  # what the operator publishes
    assert verifier == signed_note.verifier_key(ORIGIN, mirror_key)
    opened = go_open(gonote, served, verifier)
    assert opened.returncode == 0, opened.stderr
    text = signed_note.parse(served).text
    assert json.loads(opened.stdout) == {"text": text, "verified": [ORIGIN], "unverified": []}
    assert text.splitlines()[3] == "commit " + mirror.git("rev-parse", "main").strip()
    # Go refuses what gitmirror refuses: another text under the mirror's signature, another signer.
    tampered = go_open(gonote, served.replace(f"{ORIGIN}\n1\n".encode(), f"{ORIGIN}\n2\n".encode(), 1), verifier)
    assert tampered.returncode == 1 and b"invalid signature" in tampered.stderr
    stranger = load_ssh_public_key(Path(str(make_key(tmp_path, "stranger")) + ".pub").read_bytes())
    assert isinstance(stranger, Ed25519PublicKey)
    unknown = go_open(gonote, served, signed_note.verifier_key(ORIGIN + "-other", stranger))
    assert unknown.returncode == 1 and unknown.stderr == b"note has no verifiable signatures\n"
    # A witness's cosignature is one more signature line Go's parser reads (and leaves to cosignature/v1 verifiers).
    clone = tmp_path / "witness-clone"
    git("clone", "-q", str(mirror.repo), str(clone), cwd=tmp_path)
    witness_key = make_key(tmp_path, "witness-key")
    cosigned = tmp_path / "cosigned" / "witness.note"
    witness = ("witness", "cosign", "--checkpoint", server.url, "--key", str(witness_key), "--name", "witness.test")
    done = client(tmp_path, *witness, "--keys", str(allowed), "--repo", str(clone), "--out", str(cosigned))
    assert done.returncode == 0, done.stderr
    opened = go_open(gonote, cosigned.read_bytes(), verifier)
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout) == {"text": text, "verified": [ORIGIN], "unverified": ["witness.test"]}


def test_an_unsigned_mirror_publishes_no_checkpoint_until_init_gives_it_a_key(mirror, synced_repo, serve, tmp_path):
    shutil.copytree(synced_repo, mirror.repo)
    unsigned = serve()
    answer = httpx.get(unsigned.url + "/checkpoint")
    assert answer.status_code == 404 and answer.text == "this mirror publishes no checkpoint: it has no signing key\n"
    keyless = mirror.run("checkpoint-key")
    assert keyless.returncode == 2 and keyless.stderr.startswith("gitmirror: error: this mirror has no signing key")
    key = make_key(tmp_path, "mirror-key")
    mirror.run("init", "--signing-key", str(key), check=True)  # the key goes to the repository's config only
    note = signed_note.parse(httpx.get(serve().url + "/checkpoint").content)
    checkpoint = signed_note.parse_checkpoint(note.text)
    assert checkpoint.origin.startswith("gitmirror-") and checkpoint.size == 1
    vkey = mirror.run("checkpoint-key", check=True).stdout.strip()
    assert vkey.startswith(checkpoint.origin + "+")  # the key named as the checkpoint names its origin
    assert signed_note.verified_by(note, checkpoint.origin, signed_note.parse_verifier_key(vkey)[1])

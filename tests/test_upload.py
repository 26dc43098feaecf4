"""Uploads into a running ``gitmirror serve`` with real clients (twine, ``uv publish``), installs of
the private package and its public dependencies through one index URL (pip, uv), and every refusal
the upload API answers: tokens missing, wrong and revoked, names not hosted, bad files and forms."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import Mirror, RunningServer, isolated_env, start_server, stop_server
from fakeupstream import Artifact, build_sdist, build_wheel
from presynced import served, synced_sample

HOSTED = """projects:
  - demo-pkg
hosted:
  projects:
    - "acme-*"
    - name: tool
      alternate-locations: ["https://other.example/simple/tool/"]
  max_upload_size: 1MiB
"""


def create_token(mirror: Mirror, name: str) -> str:
    result = mirror.run("token", "create", name, check=True)
    return result.stdout.strip().splitlines()[-1]


def serving_an_upload(
    mirror: Mirror, serve: Callable[[], RunningServer], config: str, uploader: str
) -> tuple[RunningServer, str]:
    """``mirror`` configured with ``config``, synced and served, with acme-lib 1.0 uploaded by a
    token named ``uploader``; returns the server and the token."""
    mirror.configure(config)
    mirror.run("sync", check=True)
    token = create_token(mirror, uploader)
    server = serve()
    assert form_post(server, token, build_wheel("acme-lib", "1.0")).status_code == 200
    return server, token


def write(tmp_path: Path, artifact: Artifact) -> Path:
    folder = tmp_path / "dist" / hashlib.sha256(artifact.data).hexdigest()[:8]
    folder.mkdir(parents=True)
    path = folder / artifact.filename
    path.write_bytes(artifact.data)
    return path


def twine(server: RunningServer, token: str, *files: Path, user: str = "__token__") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar"]
        + ["--repository-url", server.url + "/legacy/", "-u", user, "-p", token, *map(str, files)],
        env=isolated_env(TWINE_NON_INTERACTIVE="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def uv_publish(server: RunningServer, token: str, *files: Path) -> subprocess.CompletedProcess[str]:
    uv = Path(sys.executable).parent / "uv"
    return subprocess.run(
        [str(uv) if uv.exists() else "uv", "publish", "--publish-url", server.url + "/legacy/", "--token", token]
        + [str(file) for file in files],
        env=isolated_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def form_post(server: RunningServer, token: str | None, artifact: Artifact, **overrides: str | None) -> httpx.Response:
    """A legacy upload form as twine sends it; ``overrides`` change (or, with None, drop) fields."""
    fields: dict[str, str | None] = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": artifact.filename.split("-")[0].replace("_", "-"),
        "version": artifact.filename.split("-")[1].removesuffix(".tar.gz"),
        "filetype": "bdist_wheel" if artifact.filename.endswith(".whl") else "sdist",
        "pyversion": "py3",
        "sha256_digest": artifact.sha256,
    }
    fields.update(overrides)
    data = {key: value for key, value in fields.items() if value is not None}
    auth = ("__token__", token) if token is not None else None
    files = {"content": (artifact.filename, artifact.data, "application/octet-stream")}
    return httpx.post(server.url + "/legacy/", data=data, files=files, auth=auth, timeout=30)


@pytest.fixture
def hosted(mirror: Mirror, sample: dict, serve) -> tuple[Mirror, RunningServer, str]:
    """A synced mirror hosting ``acme-*`` and ``tool``, served, with a token named ``ci``."""
    mirror.configure(HOSTED)
    mirror.run("sync", check=True)
    token = create_token(mirror, "ci")
    return mirror, serve(), token


@pytest.fixture(scope="module")
def hosted_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mirror, RunningServer, str]]:
    """``hosted`` shared by the tests whose uploads are all refused: they write nothing."""
    with synced_sample(tmp_path_factory.mktemp("hosted") / "site", HOSTED) as (mirror, _sample):
        token = create_token(mirror, "ci")
        with served(mirror) as server:
            yield mirror, server, token


def test_twine_upload_then_pip_and_uv_install_private_and_public_through_one_index(
    hosted: tuple[Mirror, RunningServer, str], tmp_path: Path, make_venv
) -> None:
    mirror, server, token = hosted
    wheel = build_wheel("acme-app", "1.0", requires_dist=["demo-pkg>=1.0"], requires_python=">=3.8")
    sdist = build_sdist("acme-app", "1.0", requires_dist=["demo-pkg>=1.0"])
    result = twine(server, token, write(tmp_path, wheel), write(tmp_path, sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    page = httpx.get(server.index_url + "acme-app/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    files = {item["filename"]: item for item in page["files"]}
    assert set(files) == {wheel.filename, sdist.filename}
    assert files[wheel.filename]["hashes"] == {"sha256": wheel.sha256}
    assert files[wheel.filename]["core-metadata"] == {"sha256": wheel.metadata_sha256}  # PEP 658, from the wheel
    assert files[wheel.filename]["requires-python"] == ">=3.8"
    metadata = httpx.get(server.url + f"/files/acme-app/{wheel.filename}.metadata")
    assert metadata.content == wheel.metadata
    assert httpx.get(server.url + f"/files/acme-app/{sdist.filename}").content == sdist.data
    log = mirror.git("log", "-1", "--format=%B", "main")
    assert f"acme-app: + {sdist.filename}" in log and "uploaded-by: ci" in log
    assert mirror.run("verify", check=True).returncode == 0

    pip_venv = make_venv("pip")
    installed = pip_venv.pip_install(server.index_url, "acme-app")
    assert installed.returncode == 0, installed.stderr
    assert pip_venv.run("import acme_app, demo_pkg; print(acme_app.__version__, demo_pkg.__version__)") == "1.0 1.0"
    uv_venv = make_venv("uv")
    installed = uv_venv.uv_install(server.index_url, "acme-app")
    assert installed.returncode == 0, installed.stderr
    assert uv_venv.run("import acme_app, demo_pkg; print(acme_app.__version__, demo_pkg.__version__)") == "1.0 1.0"


def test_uv_publish_uploads_and_the_same_filename_with_other_bytes_is_refused(
    hosted: tuple[Mirror, RunningServer, str], tmp_path: Path
) -> None:
    mirror, server, token = hosted
    original = build_wheel("acme-lib", "2.0")
    published = uv_publish(server, token, write(tmp_path, original))
    assert published.returncode == 0, published.stderr
    tip = mirror.git("rev-parse", "main")

    other = build_wheel("acme-lib", "2.0", summary="other bytes, same filename")
    assert other.filename == original.filename and other.sha256 != original.sha256
    refused = twine(server, token, write(tmp_path, other))
    assert refused.returncode != 0
    answer = form_post(server, token, other)
    assert answer.status_code == 400
    assert answer.text == f"{original.filename} already exists with other bytes; a filename is never reused\n"
    again = form_post(server, token, original)  # the same bytes again: nothing changes (twine --skip-existing)
    assert again.status_code == 200 and "nothing changed" in again.text
    assert mirror.git("rev-parse", "main") == tip
    assert httpx.get(server.url + f"/files/acme-lib/{original.filename}").content == original.data

    sdist = build_sdist("acme-lib", "2.0")
    assert form_post(server, token, sdist).status_code == 200
    tip = mirror.git("rev-parse", "main")
    for spelling, data, recorded in [  # another filename for a file installers already choose: refused
        ("Acme_Lib-2.0-py3-none-any.whl", other.data, original.filename),
        ("acme_lib-2.0.0-py3-none-any.whl", other.data, original.filename),
        ("acme_lib-2.0-py2.py3-none-any.whl", other.data, original.filename),  # py3 either way
        ("acme_lib-2.00.tar.gz", sdist.data, sdist.filename),  # one sdist per release
    ]:
        answer = form_post(server, token, Artifact(spelling, data))
        assert (answer.status_code, answer.text) == (
            400,
            f"{spelling} is the same distribution as {recorded}, recorded before: "
            "upload a new version (or a wheel with a build tag)\n",
        )
    assert mirror.git("rev-parse", "main") == tip
    rebuilt = form_post(server, token, Artifact("acme_lib-2.0-1-py3-none-any.whl", other.data))  # PEP 427's way
    assert rebuilt.status_code == 200, rebuilt.text


def test_flit_publishes_a_wheel_and_an_sdist_both_served(
    hosted: tuple[Mirror, RunningServer, str], tmp_path: Path
) -> None:
    """flit sends the same legacy form (its own metadata fields, md5 and sha256 digests)."""
    mirror, server, token = hosted
    project = tmp_path / "acme-flit"
    (project / "acme_flit").mkdir(parents=True)
    (project / "acme_flit" / "__init__.py").write_text('"""A hosted package built by flit."""\n__version__ = "0.3"\n')
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.9"]\nbuild-backend = "flit_core.buildapi"\n\n'
        '[project]\nname = "acme-flit"\nversion = "0.3"\ndescription = "A hosted package"\n'
        'requires-python = ">=3.9"\ndependencies = ["demo-pkg>=1.0"]\n'
    )
    published = subprocess.run(
        [str(Path(sys.executable).parent / "flit"), "publish", "--no-use-vcs"],
        cwd=project,
        env=isolated_env(
            HOME=str(tmp_path),
            FLIT_INDEX_URL=server.url + "/legacy/",
            FLIT_USERNAME="__token__",
            FLIT_PASSWORD=token,
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert published.returncode == 0, published.stderr
    page = httpx.get(server.index_url + "acme-flit/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    files = {item["filename"]: item for item in page.json()["files"]}
    assert set(files) == {"acme_flit-0.3-py3-none-any.whl", "acme_flit-0.3.tar.gz"}
    assert files["acme_flit-0.3-py3-none-any.whl"]["requires-python"] == ">=3.9"
    assert files["acme_flit-0.3-py3-none-any.whl"]["core-metadata"]
    assert files["acme_flit-0.3.tar.gz"]["requires-python"] == ">=3.9"  # the form's field
    for filename in files:
        built = (project / "dist" / filename).read_bytes()
        assert httpx.get(server.url + f"/files/acme-flit/{filename}").content == built
    assert "uploaded-by: ci" in mirror.git("log", "-1", "--format=%B", "main")


def test_hatch_publishes_and_a_wrong_token_fails_it(hosted: tuple[Mirror, RunningServer, str], tmp_path: Path) -> None:
    mirror, server, token = hosted
    wheel, sdist = build_wheel("acme-hatched", "2.1"), build_sdist("acme-hatched", "2.1")
    paths = [str(write(tmp_path, wheel)), str(write(tmp_path, sdist))]

    def hatch_publish(auth: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "hatch"), "publish", "--no-prompt", "--repo", server.url + "/legacy/"]
            + ["--user", "__token__", "--auth", auth, *paths],
            cwd=tmp_path,
            env=isolated_env(HOME=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=120,
        )

    refused = hatch_publish("gitmirror-wrong")
    assert refused.returncode != 0 and "403" in refused.stdout + refused.stderr
    published = hatch_publish(token)
    assert published.returncode == 0, published.stdout + published.stderr
    for artifact in (wheel, sdist):
        assert httpx.get(server.url + f"/files/acme-hatched/{artifact.filename}").content == artifact.data
    assert "uploaded-by: ci" in mirror.git("log", "-1", "--format=%B", "main")


def test_tokens_missing_wrong_and_revoked_are_refused(hosted: tuple[Mirror, RunningServer, str]) -> None:
    mirror, server, token = hosted
    wheel = build_wheel("acme-lib", "1.0")
    line = "uploads need a valid token: HTTP basic auth, user __token__, the token as password\n"
    for bad_token in (None, "gitmirror-wrong", token + "x"):
        answer = form_post(server, bad_token, wheel)
        assert (answer.status_code, answer.text) == (403, line)
    wrong_user = httpx.post(server.url + "/legacy/", auth=("alice", token), files={"content": ("x", b"")})
    assert wrong_user.status_code == 403
    assert mirror.run("token", "revoke", "ci", check=True).stdout.startswith("revoked token ci")
    revoked = form_post(server, token, wheel)
    assert (revoked.status_code, revoked.text) == (403, line)
    assert "revoked" in mirror.run("token", "list", check=True).stdout
    assert mirror.run("token", "create", "ci").stderr.strip() == (
        "gitmirror: error: a token named ci revoked; names are never reused"
    )
    fresh = create_token(mirror, "ci-2")
    assert form_post(server, fresh, wheel).status_code == 200
    log = mirror.git("log", "-1", "--format=%B", "main")
    assert "uploaded-by: ci-2" in log


def test_a_name_not_hosted_is_refused_with_how_to_allow_it(hosted_once: tuple[Mirror, RunningServer, str]) -> None:
    _mirror, server, token = hosted_once
    answer = form_post(server, token, build_wheel("demo-pkg", "9.0"))
    assert answer.status_code == 403
    assert answer.text == (
        "demo-pkg is not hosted here: add it (or a matching glob) to hosted: in mirror.yaml to allow uploads\n"
    )


def test_a_follower_takes_no_upload(hosted_once: tuple[Mirror, RunningServer, str], tmp_path: Path) -> None:
    """A commit on a ``serve --follow`` machine would part its branch from the remote's for good."""
    mirror, _server, token = hosted_once
    repo = tmp_path / "mirror" / "repo"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(mirror.repo), str(repo)], env=isolated_env(), check=True)
    shutil.copy(mirror.repo / "gitmirror-tokens.json", repo)  # the same tokens
    (tmp_path / "mirror" / "store").mkdir()
    (tmp_path / "mirror.yaml").write_text((mirror.root / "mirror.yaml").read_text())
    follower = start_server(tmp_path, "--follow", str(mirror.repo), "--follow-interval", "60")
    try:
        answer = form_post(follower, token, build_wheel("acme-lib", "1.0"))
    finally:
        stop_server(follower)
    assert (answer.status_code, answer.text) == (
        403,
        f"this server follows {mirror.repo} (serve --follow): upload to the mirror it follows\n",
    )


def _not_a_zip(filename: str) -> Artifact:
    return Artifact(filename, b"this is not a zip archive at all")


@pytest.mark.parametrize(
    ("artifact", "overrides", "line"),
    [
        (
            _not_a_zip("acme_lib-1.0-py3-none-any.whl"),
            {},
            "acme_lib-1.0-py3-none-any.whl is not a valid wheel: not a zip archive",
        ),
        (
            build_wheel("acme-lib", "1.0"),
            {"version": "1.1"},
            "acme_lib-1.0-py3-none-any.whl does not match the upload's name acme-lib and version 1.1",
        ),
        (
            build_wheel("acme-other", "1.0"),
            {"name": "acme-lib"},
            "acme_other-1.0-py3-none-any.whl does not match the upload's name acme-lib and version 1.0",
        ),
        (
            Artifact("acme_lib-1.0-py3-none-any.whl", build_wheel("acme-zzz", "1.0").data),
            {},
            "acme_lib-1.0-py3-none-any.whl is not a valid wheel: its acme_zzz-1.0.dist-info does not match "
            "acme-lib 1.0",
        ),
        (
            Artifact("acme_lib-1.0.tar.gz", b"this is not a tarball at all"),
            {},
            "acme_lib-1.0.tar.gz is not a valid sdist: not a gzip-compressed tar archive",
        ),
        (
            Artifact("acme_lib-1.0.tar.gz", build_sdist("acme-lib", "1.0").data[:-4]),
            {},
            "acme_lib-1.0.tar.gz is not a valid sdist: not a gzip-compressed tar archive",
        ),
        (
            Artifact("acme_lib-1.0.tar.gz", build_sdist("acme-zzz", "1.0").data),
            {},
            "acme_lib-1.0.tar.gz: its PKG-INFO says acme-zzz 1.0, the upload acme-lib 1.0",
        ),
        (build_wheel("acme-lib", "1.0"), {"version": None}, "missing field version"),
        (build_wheel("acme-lib", "1.0"), {"sha256_digest": None}, "missing field sha256_digest"),
        (
            build_wheel("acme-lib", "1.0"),
            {":action": "remove_pkg"},
            "unsupported :action 'remove_pkg' (only file_upload)",
        ),
        (
            build_wheel("acme-lib", "1.0"),
            {"sha256_digest": "0" * 64},
            "sha256_digest " + "0" * 64 + " does not match the uploaded file (sha256 {sha256})",
        ),
    ],
    ids=[
        "not-a-zip",
        "version-mismatch",
        "name-mismatch",
        "dist-info-mismatch",
        "sdist-not-a-tarball",
        "sdist-truncated",
        "sdist-pkg-info-mismatch",
        "no-version",
        "no-digest",
        "wrong-action",
        "wrong-digest",
    ],
)
def test_bad_uploads_get_one_line_and_leave_nothing(
    hosted_once: tuple[Mirror, RunningServer, str], artifact: Artifact, overrides: dict[str, str | None], line: str
) -> None:
    mirror, server, token = hosted_once
    tip = mirror.git("rev-parse", "main")
    answer = form_post(server, token, artifact, **overrides)
    assert (answer.status_code, answer.text) == (400, line.format(sha256=artifact.sha256) + "\n")
    assert mirror.git("rev-parse", "main") == tip
    assert not (mirror.store / "blobs" / artifact.sha256[:2] / artifact.sha256[2:4] / artifact.sha256).exists()


def test_a_gpg_signature_is_ignored_and_any_other_file_refused(hosted: tuple[Mirror, RunningServer, str]) -> None:
    """twine --sign sends a detached signature beside the file: the upload is taken, the signature
    is not kept; a second ``content`` or another file field is refused."""
    _mirror, server, token = hosted
    wheel = build_wheel("acme-lib", "1.0")
    fields = {":action": "file_upload", "name": "acme-lib", "version": "1.0", "sha256_digest": wheel.sha256}
    content = ("content", (wheel.filename, wheel.data, "application/octet-stream"))
    line = "an upload carries one file, content (and at most a gpg_signature, which is ignored)\n"
    for extra in ("content", "other_file"):
        other = (extra, (wheel.filename + ".x", b"-", "application/octet-stream"))
        refused = httpx.post(server.url + "/legacy/", data=fields, files=[content, other], auth=("__token__", token))
        assert (refused.status_code, refused.text) == (400, line)
    signature = ("gpg_signature", (wheel.filename + ".asc", b"-----BEGIN PGP SIGNATURE-----", "text/plain"))
    signed = httpx.post(server.url + "/legacy/", data=fields, files=[content, signature], auth=("__token__", token))
    assert signed.status_code == 200, signed.text
    assert httpx.get(server.url + f"/files/acme-lib/{wheel.filename}").content == wheel.data
    assert httpx.get(server.url + f"/files/acme-lib/{wheel.filename}.asc").status_code == 404


def test_a_wheel_whose_metadata_names_another_version_is_refused(
    hosted_once: tuple[Mirror, RunningServer, str],
) -> None:
    _mirror, server, token = hosted_once
    real = build_wheel("acme-lib", "1.0")
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(real.data)) as source, zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("METADATA"):
                data = data.replace(b"Version: 1.0", b"Version: 3.0")
            target.writestr(info, data)
    forged = Artifact(real.filename, buffer.getvalue())
    answer = form_post(server, token, forged)
    assert (answer.status_code, answer.text) == (
        400,
        "acme_lib-1.0-py3-none-any.whl: its METADATA says acme-lib 3.0, the upload acme-lib 1.0\n",
    )


def test_a_body_over_the_limit_is_refused_unread(hosted_once: tuple[Mirror, RunningServer, str]) -> None:
    """A 2 GB upload announced by Content-Length is refused before its body; a streamed one
    (no length) once it passes the limit: the server never holds it."""
    _mirror, server, token = hosted_once
    host, port = server.url.removeprefix("http://").split(":")
    import base64

    auth = base64.b64encode(f"__token__:{token}".encode()).decode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                "POST /legacy/ HTTP/1.1\r\nHost: mirror\r\n"
                f"Authorization: Basic {auth}\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n"
                f"Content-Length: {2 * 1024**3}\r\n\r\n"
            ).encode()
            + b"--x\r\n"
        )
        received = b""
        while not received.endswith(b"(hosted.max_upload_size)\n") and (chunk := sock.recv(65536)):
            received += chunk  # the status line and the body may arrive apart
        answer = received.decode()
    assert answer.startswith("HTTP/1.1 400")
    assert answer.endswith(
        f"upload of {2 * 1024**3} bytes is over the limit of 1048576 bytes (hosted.max_upload_size)\n"
    )
    big = build_wheel("acme-big", "1.0", payload_size=(1 << 20) + (64 << 10))  # past the limit, within socket buffers

    def chunks():
        yield from (big.data[i : i + 65536] for i in range(0, len(big.data), 65536))

    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{big.filename}"\r\n\r\n'
    ).encode()

    def body():
        yield head
        yield from chunks()
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        streamed = httpx.post(
            server.url + "/legacy/",
            content=body(),
            auth=("__token__", token),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=30,
        )
    except httpx.TransportError:
        pytest.fail("the server should answer, not drop the connection")
    assert (streamed.status_code, streamed.text) == (
        400,
        "upload over the limit of 1048576 bytes (hosted.max_upload_size)\n",
    )


def test_the_hook_refuses_a_push_that_edits_an_uploaded_files_hash(
    hosted: tuple[Mirror, RunningServer, str], tmp_path: Path
) -> None:
    mirror, server, token = hosted
    wheel = build_wheel("acme-lib", "1.0")
    assert form_post(server, token, wheel).status_code == 200
    assert mirror.run("install-hook", check=True).returncode == 0
    env = isolated_env(HOME=str(tmp_path))
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(mirror.repo), str(work)], env=env, check=True)
    manifest = work / "projects" / "ac" / "me" / "acme-lib.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    lines[1]["sha256"] = "f" * 64
    manifest.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
    subprocess.run(["git", "commit", "-qam", "swap the wheel"], cwd=work, env=env, check=True)
    pushed = subprocess.run(["git", "push", "origin", "main"], cwd=work, env=env, capture_output=True, text=True)
    assert pushed.returncode != 0
    assert f"sha256 of {wheel.filename} changed from {wheel.sha256} to {'f' * 64}" in pushed.stderr
    assert httpx.get(server.url + f"/files/acme-lib/{wheel.filename}").content == wheel.data


def test_yank_and_takedown_work_on_uploads(hosted: tuple[Mirror, RunningServer, str]) -> None:
    mirror, server, token = hosted
    wheel = build_wheel("acme-lib", "1.0")
    assert form_post(server, token, wheel).status_code == 200
    mirror.run("yank", "acme-lib", "1.0", "--reason", "broken", check=True)
    page = httpx.get(server.index_url + "acme-lib/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert page.json()["files"][0]["yanked"] == "broken"
    mirror.run("takedown", wheel.filename, "--reason", "leaked secret", check=True)
    assert httpx.get(server.url + f"/files/acme-lib/{wheel.filename}").status_code == 410
    again = form_post(server, token, wheel)
    assert (again.status_code, again.text) == (400, f"{wheel.filename} was taken down; a filename is never reused\n")
    renamed = build_wheel("acme-lib", "1.0", tag="py2.py3-none-any")
    assert form_post(server, token, renamed).status_code == 200  # other bytes, another name: fine


def test_concurrent_uploads_are_all_recorded_one_commit_each(hosted: tuple[Mirror, RunningServer, str]) -> None:
    mirror, server, token = hosted
    wheels = [build_wheel("acme-lib", f"1.{minor}") for minor in range(4)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda wheel: form_post(server, token, wheel), wheels))
    assert [answer.status_code for answer in answers] == [200] * 4
    page = httpx.get(server.index_url + "acme-lib/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert page.json()["versions"] == ["1.0", "1.1", "1.2", "1.3"]
    subjects = mirror.git("log", "--format=%s", "-4", "main").splitlines()
    assert sorted(subjects) == [f"upload: acme-lib 1.{minor}" for minor in range(4)]
    mirror.run("deprecate", "acme-lib", "--status", "archived", "--reason", "use acme-core", check=True)
    status = httpx.get(server.index_url + "acme-lib/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert status.json()["project-status"] == {"status": "archived", "reason": "use acme-core"}


def test_taken_down_bytes_are_refused_under_another_filename(hosted: tuple[Mirror, RunningServer, str]) -> None:
    mirror, server, token = hosted
    sdist = build_sdist("acme-lib", "1.0")
    assert form_post(server, token, sdist).status_code == 200
    mirror.run("takedown", sdist.filename, "--reason", "malware", check=True)
    renamed = Artifact("acme-lib-1.0.tar.gz", sdist.data)
    answer = form_post(server, token, renamed, name="acme-lib", version="1.0")
    assert (answer.status_code, answer.text) == (
        400,
        "acme-lib-1.0.tar.gz: these bytes were taken down (malware); they are never served again\n",
    )
    assert not (mirror.store / "blobs" / sdist.sha256[:2] / sdist.sha256[2:4] / sdist.sha256).exists()


def test_twine_flit_and_hatch_are_installed() -> None:
    for client in ("twine", "flit", "hatch"):
        assert shutil.which(client, path=str(Path(sys.executable).parent)) is not None, client


def test_review_reports_uploads_like_mirrored_releases(hosted: tuple[Mirror, RunningServer, str]) -> None:
    """``gitmirror review`` of a range of uploads: releases, dependencies from the wheel's PEP 658 file
    and the sdist's PKG-INFO, and the flags a reviewer reads for mirrored ones."""
    mirror, server, token = hosted
    before = mirror.git("rev-parse", "main").strip()
    assert form_post(server, token, build_sdist("acme-lib", "1.0", requires_dist=["demo-pkg>=1.0"])).status_code == 200
    wheel = build_wheel("acme-lib", "1.1", requires_dist=["demo-pkg>=2.0", "acme-new>=1"])
    assert form_post(server, token, wheel).status_code == 200
    report = json.loads(mirror.run("review", f"{before}..main", "--format", "json", check=True).stdout)
    (project,) = report["projects"]
    assert project["name"] == "acme-lib"
    releases = {release["version"]: release for release in project["releases"]}
    assert list(releases) == ["1.0", "1.1"]
    assert releases["1.1"]["previous"] == "1.0"
    assert releases["1.1"]["dependencies"] == {
        "added": ["acme-new>=1"],
        "removed": [],
        "repinned": [["demo-pkg>=1.0", "demo-pkg>=2.0"]],
    }
    assert "new dependency acme-new is not served by this mirror yet" in releases["1.1"]["flags"]


def test_a_change_of_hosted_pep708_data_reaches_recorded_projects_at_the_next_sync(
    hosted: tuple[Mirror, RunningServer, str],
) -> None:
    """``alternate-locations`` declared after the uploads: ``sync`` writes them into the hosted
    project's manifest (with projects to mirror, and with none), and takes them away again."""
    mirror, server, token = hosted
    assert form_post(server, token, build_wheel("acme-lib", "1.0")).status_code == 200
    alternate = "https://other.example/simple/acme-lib/"

    def meta() -> list[str]:
        html = httpx.get(server.index_url + "acme-lib/").text
        return [line.strip() for line in html.splitlines() if "pypi:alternate-locations" in line]

    assert meta() == []
    declared = HOSTED.replace(
        '    - "acme-*"\n', f'    - "acme-*"\n    - name: acme-lib\n      alternate-locations: ["{alternate}"]\n'
    )
    mirror.configure(declared)
    synced = mirror.run("sync", check=True)
    assert "1 changed" in synced.stdout
    assert "acme-lib: PEP 708 tracks and alternate-locations set from hosted: in mirror.yaml" in mirror.git(
        "log", "-1", "--format=%B", "main"
    )
    assert meta() == [f'<meta name="pypi:alternate-locations" content="{alternate}">']
    page = httpx.get(server.index_url + "acme-lib/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert page.json()["alternate-locations"] == [alternate]
    assert "nothing to commit" in mirror.run("sync", check=True).stdout

    mirror.configure(HOSTED.removeprefix("projects:\n  - demo-pkg\n"))  # only hosted projects: no upstream sync
    tip = mirror.git("rev-parse", "main")
    assert mirror.run("sync", check=True).stdout.startswith("hosted projects' PEP 708 data written; commit ")
    assert meta() == [] and mirror.git("rev-parse", "main") != tip
    assert mirror.run("sync", check=True).stdout == "hosted projects' PEP 708 data unchanged\n"
    assert mirror.run("verify", check=True).returncode == 0


def test_an_upload_into_a_bucket_store_is_served_from_it(
    s3_mirror: Mirror, s3_server, sample: dict, serve, tmp_path: Path
) -> None:
    bucket = s3_mirror.bucket  # type: ignore[attr-defined]
    s3_mirror.configure('projects:\n  - demo-pkg\nhosted: ["acme-*"]\n' + s3_server.settings(bucket))
    s3_mirror.run("sync", check=True)
    token = create_token(s3_mirror, "ci")
    server = serve()
    wheel = build_wheel("acme-lib", "1.0")
    published = uv_publish(server, token, write(tmp_path, wheel))
    assert published.returncode == 0, published.stderr
    served = httpx.get(server.url + f"/files/acme-lib/{wheel.filename}", follow_redirects=True)
    assert served.content == wheel.data
    metadata = httpx.get(server.url + f"/files/acme-lib/{wheel.filename}.metadata", follow_redirects=True)
    assert metadata.content == wheel.metadata
    assert s3_mirror.run("verify", check=True).returncode == 0

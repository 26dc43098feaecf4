"""Hosted projects beside mirrored ones: the pure parts in-process (tokens, the hosted matcher,
``hosted:`` parsing, the upload form), and through real processes the dependency-confusion rule
(sync never fills a hosted name from upstream), PEP 708 data on pages, and the private-index mode."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import io
import json
import shutil
import struct
import subprocess
import tarfile
import tracemalloc
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from test_upload import create_token, form_post, serving_an_upload

from gitmirror.hosted import upload
from gitmirror.hosted.auth import credentials, token_name
from gitmirror.hosted.routes import MAX_FIELD_BYTES, MAX_FIELDS_BYTES, UploadFormParser, Uploads
from gitmirror.hosted.tokens import TokenError, TokenStore, matching, new_token, record_for, token_digest
from gitmirror.hosted.upload import UploadRefused, check_file, check_form, same_distribution
from gitmirror.model.hosted import HostedProject, HostedSettings
from gitmirror.model.limits import MAX_METADATA_BYTES
from gitmirror.model.manifest import ProjectManifest, loads, manifest_path
from gitmirror.storage import bounded_archives
from gitmirror.storage import metadata as core_metadata
from gitmirror.storage.bounded_archives import MAX_UNPACKED_BYTES, MAX_ZIP_DIRECTORY_BYTES
from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.store import BlobStore
from gitmirror.sync.config import ConfigError, from_mapping
from gitmirror.sync.hosted_headers import hosted_names
from gitmirror.upstream.credentials import NetrcCredentials

from conftest import TEST_SETTINGS, Mirror, isolated_env
from fakeupstream import FakeUpstream, build_sdist, build_wheel

# -- tokens ------------------------------------------------------------------------------------


def test_a_token_is_stored_as_a_salted_hash_and_checked_by_it() -> None:
    token = new_token()
    record = record_for("ci", token)
    assert token not in json.dumps(record.__dict__)
    assert record.sha256 == token_digest(token, record.salt)
    assert record_for("ci", token).salt != record.salt  # same token, another salt, another hash
    assert matching({"ci": record}, token) == "ci"
    assert matching({"ci": record}, token + "x") is None
    assert matching({"ci": record}, "not-a-token") is None


def test_the_token_file_keeps_hashes_only_and_revoked_names_stay_taken(tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path)
    token = tokens.create("deploy")
    text = (tmp_path / "gitmirror-tokens.json").read_text()
    assert token not in text and "deploy" in text
    assert (tmp_path / "gitmirror-tokens.json").stat().st_mode & 0o077 == 0
    assert tokens.check(token) == "deploy"
    tokens.revoke("deploy")
    assert tokens.check(token) is None
    with pytest.raises(TokenError, match="never reused"):
        tokens.create("deploy")
    with pytest.raises(TokenError, match="no token named nobody"):
        tokens.revoke("nobody")
    with pytest.raises(TokenError, match="invalid token name"):
        tokens.create("../x")


@pytest.mark.parametrize(
    "record",
    [
        {"name": "x", "salt": "zz", "sha256": "00", "created": "t"},  # a salt that is no hex
        {"name": "x", "salt": "0", "sha256": "0", "created": "t"},
        {"name": 5, "salt": "00", "sha256": "00", "created": "t"},
        {"name": "x", "salt": "00", "sha256": None, "created": "t"},
        {"name": "x", "salt": "00", "sha256": "00", "created": "t", "revoked": 1},
    ],
)
def test_a_damaged_token_file_fails_every_check_in_one_line(tmp_path: Path, record: dict) -> None:
    (tmp_path / "gitmirror-tokens.json").write_text(json.dumps({"gitmirror-tokens": 1, "tokens": [record]}))
    with pytest.raises(TokenError, match="not a gitmirror token file"):
        TokenStore(tmp_path).check(new_token())


def test_basic_credentials_are_parsed_strictly(tmp_path: Path) -> None:
    import base64

    def basic(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert credentials(basic("__token__:abc:def")) == ("__token__", "abc:def")
    assert credentials(basic("no-colon")) is None
    assert credentials("Bearer abc") is None
    assert credentials("Basic !!!") is None
    assert credentials("Basic \xff\xfe") is None  # a header's bytes beyond ASCII, as Starlette decodes them
    tokens = TokenStore(tmp_path)
    token = tokens.create("ci")
    assert token_name(tokens, basic(f"__token__:{token}")) == "ci"
    assert token_name(tokens, basic(f"ci:{token}")) is None


# -- the hosted matcher and hosted: ------------------------------------------------------------


def test_hosted_names_and_globs_match_normalized_names() -> None:
    settings = from_mapping(
        {"upstream": "http://127.0.0.1:9/simple/", "hosted": ["Acme_*", "tool", {"name": "lib", "tracks": []}]}
    ).hosted
    assert settings.is_hosted("acme-app") and settings.is_hosted("tool") and settings.is_hosted("lib")
    assert not settings.is_hosted("acme") and not settings.is_hosted("tools")
    assert settings.kept_from_upstream("acme-app")
    assert not settings.kept_from_upstream("requests")
    assert not HostedSettings().is_hosted("anything")


def test_tracking_the_upstream_page_lets_sync_fill_a_hosted_name() -> None:
    upstream = "http://127.0.0.1:9/simple/"
    settings = from_mapping(
        {
            "upstream": upstream,
            "hosted": {
                "projects": [
                    "acme-*",
                    {"name": "acme-shared", "tracks": upstream + "acme-shared/"},
                    {"name": "acme-fork", "tracks": ["https://elsewhere.example/simple/acme-fork/"]},
                ],
                "read_auth": True,
                "max_upload_size": "10MiB",
            },
        }
    ).hosted
    assert settings.entry("acme-shared") == HostedProject(
        "acme-shared", (upstream + "acme-shared/",), (), follows_upstream=True
    )  # the exact name wins over the glob listed first
    assert not settings.kept_from_upstream("acme-shared")
    assert settings.kept_from_upstream("acme-fork")  # tracks another index: upstream's is still kept out
    assert settings.read_auth and settings.max_upload_size == 10 * 1024 * 1024


def test_hosted_names_lists_one_shard_for_a_long_prefix_and_every_shard_else(tmp_path: Path) -> None:
    repo = MetadataRepo.init(tmp_path / "repo.git")
    names = ["acme-lib", "acme", "acm", "ab", "tool", "other-acme-x"]
    files = {manifest_path(name): ProjectManifest(name=name).dumps() for name in names}
    commit = repo.write_commit(files, "projects")
    hosting = HostedSettings(
        projects=(HostedProject("acme*"), HostedProject("*acme-*"), HostedProject("a?"), HostedProject("tool"))
    )
    assert hosted_names(repo, commit, hosting) == {"acme-lib", "acme", "other-acme-x", "ab", "tool"}
    assert sorted(name for name, _ in repo.manifest_blobs(commit, "ac/me")) == ["acme", "acme-lib"]
    assert list(repo.manifest_blobs(commit, "zz/zz")) == []
    assert hosted_names(repo, None, hosting) == set()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"projects": ["x"], "colour": 1}, "unknown key 'hosted.colour'"),
        (["../x"], "invalid project name '../x'"),
        ([{"name": "x", "tracks": ["ftp://a/"]}], "'ftp://a/' is not an http(s) URL"),
        ([{"name": "x-*", "tracks": ["https://a/simple/x/"]}], "tracks names one upstream project"),
        ({"read_auth": "yes"}, "hosted.read_auth must be true or false"),
        ({"max_upload_size": "lots"}, "hosted.max_upload_size"),
        ("acme", "hosted must be a list of hosted project names"),
    ],
)
def test_bad_hosted_settings_are_one_line(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        from_mapping({"hosted": value})


def test_pep708_data_round_trips_through_the_manifest_and_bad_urls_are_refused() -> None:
    manifest = ProjectManifest(name="tool", tracks=("https://a.example/simple/tool/",))
    assert loads(manifest.dumps()) == manifest
    with pytest.raises(ValueError, match="tracks must be a list of http"):
        loads(b'{"gitmirror-manifest":1,"name":"tool","tracks":["javascript:alert(1)"]}\n')


# -- the upload form ----------------------------------------------------------------------------


def _fields(**overrides: str) -> dict[str, str]:
    wheel = build_wheel("acme-lib", "1.0")
    fields = {":action": "file_upload", "name": "acme-lib", "version": "1.0", "sha256_digest": wheel.sha256}
    fields.update(overrides)
    return fields


def test_the_upload_form_is_checked_against_the_filename() -> None:
    form = check_form(_fields(name="Acme_Lib"), "acme_lib-1.0-py3-none-any.whl")
    assert (form.project, form.version, form.is_wheel) == ("acme-lib", "1.0", True)
    sdist = check_form(_fields(requires_python=">=3.9"), "acme_lib-1.0.tar.gz")
    assert sdist.requires_python == ">=3.9" and not sdist.is_wheel
    recorded = check_form(_fields(version="01.0.0"), "acme_lib-1.0.tar.gz").version
    assert recorded == "1.0"  # what a sync records for that filename: one release, one version string
    for fields, filename, line in [
        (_fields(), None, "missing field content (the file)"),
        (_fields(name=""), "acme_lib-1.0.tar.gz", "missing field name"),
        (_fields(version="one"), "acme_lib-1.0.tar.gz", "invalid version 'one'"),
        (
            _fields(requires_python='>=3.8" onload="x'),
            "acme_lib-1.0.tar.gz",
            "invalid requires_python '>=3.8\" onload=\"x' (a version specifier such as >=3.9)",
        ),
        (_fields(sha256_digest="abc"), "acme_lib-1.0.tar.gz", "sha256_digest 'abc' is not a sha256 hex digest"),
        (_fields(), "acme_lib-1.0.egg", "acme_lib-1.0.egg: only wheels (.whl) and sdists (.tar.gz, .zip) are accepted"),
        (_fields(), "../acme_lib-1.0.tar.gz", "invalid distribution filename '../acme_lib-1.0.tar.gz'"),
        (
            _fields(),
            "acme_lib-1.0-x.whl",
            "acme_lib-1.0-x.whl: Invalid wheel filename (wrong number of parts): 'acme_lib-1.0-x'",
        ),
    ]:
        with pytest.raises(UploadRefused) as refused:
            check_form(fields, filename)
        assert (refused.value.status, refused.value.line) == (400, line)


def test_another_spelling_of_a_recorded_file_is_the_same_distribution() -> None:
    wheel = "acme_lib-1.0-py3-none-any.whl"
    for same in ("ACME.lib-1.0.0-py3-none-any.whl", "acme_lib-1.0-py2.py3-none-any.whl"):
        assert same_distribution(same, wheel)
    for other in (
        "acme_lib-1.0-1-py3-none-any.whl",  # a build tag: PEP 427's way to publish a fixed wheel
        "acme_lib-1.0-cp311-cp311-linux_x86_64.whl",
        "acme_lib-1.1-py3-none-any.whl",
        "acme_lib-1.0.tar.gz",
        "acme_lib-1.0.egg",
    ):
        assert not same_distribution(other, wheel)
    assert same_distribution("Acme_Lib-1.00.zip", "acme_lib-1.0.tar.gz")
    assert not same_distribution("acme_lib-1.0.tar.gz", "acme-lib-1.0.win32.exe")


def test_the_fields_of_an_upload_form_are_bounded_together() -> None:
    """Each field is within its bound, together they are not: refused before they all sit in memory."""
    wheel = build_wheel("acme-lib", "1.0")
    fields = {
        f"field{number}": "x" * (MAX_FIELD_BYTES - 1) for number in range(MAX_FIELDS_BYTES // MAX_FIELD_BYTES + 1)
    }
    request = httpx.Request(
        "POST", "http://mirror/legacy/", data=fields, files={"content": (wheel.filename, wheel.data)}
    )
    body = request.read()

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]

    parser = UploadFormParser(Headers(headers=dict(request.headers)), stream(), max_part_size=MAX_FIELD_BYTES)
    with pytest.raises(MultiPartException) as refused:
        asyncio.run(parser.parse())
    assert refused.value.message == f"its fields are over {MAX_FIELDS_BYTES} bytes in all"


def test_an_upload_the_client_abandons_is_answered_in_one_line(tmp_path: Path) -> None:
    """A client that disconnects mid-body (a network failure, a killed twine): one line, no traceback."""
    config = from_mapping({"hosted": ["acme-*"]}, base=tmp_path)
    tokens = TokenStore(tmp_path)
    token = tokens.create("ci")
    basic = base64.b64encode(f"__token__:{token}".encode())
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/legacy/",
        "query_string": b"",
        "headers": [(b"authorization", b"Basic " + basic), (b"content-type", b"multipart/form-data; boundary=B")],
    }
    messages = iter(
        [
            {
                "type": "http.request",
                "body": b'--B\r\nContent-Disposition: form-data; name="x"\r\n\r\n',
                "more_body": True,
            },
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict:
        return next(messages)

    uploads = Uploads(config, BlobStore(tmp_path / "store"), tokens)
    answer = asyncio.run(uploads.upload(Request(scope, receive)))
    assert (answer.status_code, answer.body) == (400, b"the upload was interrupted: the client disconnected\n")


def test_a_wheel_file_yields_its_metadata_and_requires_python() -> None:
    wheel = build_wheel("acme-lib", "1.0", requires_python=">=3.10")
    form = check_form(_fields(sha256_digest=wheel.sha256), wheel.filename)
    size, metadata, requires_python = check_file(form, io.BytesIO(wheel.data))
    assert (size, metadata, requires_python) == (len(wheel.data), wheel.metadata, ">=3.10")
    bad_wheel = build_wheel("acme-lib", "1.0", requires_python="python 3")
    form = check_form(_fields(sha256_digest=bad_wheel.sha256), bad_wheel.filename)
    with pytest.raises(UploadRefused) as refused:
        check_file(form, io.BytesIO(bad_wheel.data))
    assert refused.value.line == "acme_lib-1.0-py3-none-any.whl: its METADATA has an invalid Requires-Python 'python 3'"


def _inflating_wheel(metadata_size: int) -> bytes:
    """A wheel of acme-lib 1.0 whose METADATA inflates to ``metadata_size`` bytes (mostly zeros)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        header = b"Metadata-Version: 2.1\nName: acme-lib\nVersion: 1.0\n\n"
        archive.writestr("acme_lib-1.0.dist-info/METADATA", header + bytes(metadata_size - len(header)))
        archive.writestr("acme_lib-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
        archive.writestr("acme_lib-1.0.dist-info/RECORD", "")
    return out.getvalue()


def test_a_metadata_that_inflates_past_the_bound_is_never_read_into_memory() -> None:
    bomb = _inflating_wheel(MAX_METADATA_BYTES + 1)
    assert len(bomb) < MAX_METADATA_BYTES // 100  # what arrives is small; what it inflates to is not
    assert core_metadata.from_wheel(bomb) is None  # a mirrored wheel: no metadata, never a crash
    wheel = "acme_lib-1.0-py3-none-any.whl"
    form = check_form(_fields(sha256_digest=hashlib.sha256(bomb).hexdigest()), wheel)
    with pytest.raises(UploadRefused) as refused:
        check_file(form, io.BytesIO(bomb))
    assert (refused.value.status, refused.value.line) == (
        400,
        f"{wheel} is not a valid wheel: its METADATA inflates to {MAX_METADATA_BYTES + 1} bytes, "
        f"over {MAX_METADATA_BYTES}",
    )
    assert core_metadata.from_wheel(_inflating_wheel(1000)) is not None


def test_an_sdist_with_more_members_than_any_source_tree_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    sdist = build_sdist("acme-lib", "1.0")
    monkeypatch.setattr(upload, "MAX_SDIST_MEMBERS", 1)
    form = check_form(_fields(sha256_digest=sdist.sha256), sdist.filename)
    with pytest.raises(UploadRefused) as refused:
        check_file(form, io.BytesIO(sdist.data))
    assert refused.value.line == f"{sdist.filename} is not a valid sdist: it has over 1 members"


def _hostile_sdist(
    header_type: bytes, header_size: int, members: int = 1, global_keys: int = 0, claimed_only: bool = False
) -> bytes:
    """acme-lib 1.0's PKG-INFO after ``members`` files, behind a header of ``header_type`` claiming
    ``header_size`` bytes (zeros, gzip-compressed to almost nothing; none with ``claimed_only``)
    and, with ``global_keys``, a global pax header of that many keys every member inherits."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as compressed:
        if header_size:
            info = tarfile.TarInfo("acme_lib-1.0/././@LongName")
            info.type, info.size = header_type, header_size
            compressed.write(info.tobuf(format=tarfile.GNU_FORMAT))
            for _ in range(0 if claimed_only else header_size >> 20):
                compressed.write(bytes(1 << 20))
            if not claimed_only:
                compressed.write(bytes(-header_size % tarfile.BLOCKSIZE + header_size % (1 << 20)))
        headers = {f"k{number}": "v" for number in range(global_keys)}
        with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT, pax_headers=headers) as tar:
            for number in range(members):
                tar.addfile(tarfile.TarInfo(f"acme_lib-1.0/f{number}"))
            pkg_info = b"Metadata-Version: 2.1\nName: acme-lib\nVersion: 1.0\n"
            info = tarfile.TarInfo("acme_lib-1.0/PKG-INFO")
            info.size = len(pkg_info)
            tar.addfile(info, io.BytesIO(pkg_info))
    return out.getvalue()


def _peak_memory_of(call: Callable[[], object]) -> int:
    tracemalloc.start()
    with contextlib.suppress(UploadRefused):
        call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    ("header_type", "header_size", "why"),
    [
        (tarfile.XHDTYPE, 64 << 20, f"an extended header of {64 << 20} bytes is over {1 << 20}"),
        (tarfile.GNUTYPE_LONGNAME, 64 << 20, f"an extended header of {64 << 20} bytes is over {1 << 20}"),
        (tarfile.XGLTYPE, 8 << 10, "its global headers are over 4096 bytes"),
        (tarfile.GNUTYPE_SPARSE, 512, "acme_lib-1.0/././@LongName is a sparse member (no source tree has one)"),
        (tarfile.REGTYPE, MAX_UNPACKED_BYTES + 1, f"it unpacks to over {MAX_UNPACKED_BYTES} bytes"),  # the header says
    ],
)
def test_an_sdist_whose_headers_would_fill_memory_is_refused_unread(
    header_type: bytes, header_size: int, why: str
) -> None:
    bomb = _hostile_sdist(header_type, header_size, claimed_only=header_type == tarfile.REGTYPE)
    form = check_form(_fields(sha256_digest=hashlib.sha256(bomb).hexdigest()), "acme_lib-1.0.tar.gz")
    with pytest.raises(UploadRefused) as refused:
        check_file(form, io.BytesIO(bomb))
    assert refused.value.line == f"acme_lib-1.0.tar.gz is not a valid sdist: {why}"
    assert _peak_memory_of(lambda: check_file(form, io.BytesIO(bomb))) < 4 << 20
    assert core_metadata.from_sdist(bomb, "acme_lib-1.0.tar.gz") is None  # a mirrored one: no metadata, no crash


def test_an_archive_that_unpacks_past_the_bound_is_refused_before_it_is_all_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bounded_archives, "MAX_UNPACKED_BYTES", 1 << 20)
    wheel = _inflating_wheel(2 << 20)
    sdist = io.BytesIO()
    with gzip.GzipFile(fileobj=sdist, mode="wb", mtime=0) as compressed:
        compressed.write(gzip.decompress(build_sdist("acme-lib", "1.0").data) + bytes(2 << 20))  # after the tar's end
    for data, filename, kind in [
        (wheel, "acme_lib-1.0-py3-none-any.whl", "wheel"),
        (sdist.getvalue(), "acme_lib-1.0.tar.gz", "sdist"),
    ]:
        form = check_form(_fields(sha256_digest=hashlib.sha256(data).hexdigest()), filename)
        with pytest.raises(UploadRefused) as refused:
            check_file(form, io.BytesIO(data))
        assert refused.value.line == f"{filename} is not a valid {kind}: it unpacks to over {1 << 20} bytes"


def test_a_zip_that_lists_a_member_twice_is_refused() -> None:
    """Which of two same-named members counts is up to each reader: the served METADATA could differ
    from the one an installer reads."""
    for original, kind in [(build_wheel("acme-lib", "1.0"), "wheel"), (build_sdist("acme-lib", "1.0"), "sdist")]:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            if kind == "wheel":
                with zipfile.ZipFile(io.BytesIO(original.data)) as source:
                    for info in source.infolist():
                        archive.writestr(info, source.read(info))
                member = "acme_lib-1.0.dist-info/METADATA"
            else:
                member = "acme_lib-1.0/PKG-INFO"
            with pytest.warns(UserWarning, match="Duplicate name"):
                for _ in range(2):
                    archive.writestr(member, "Metadata-Version: 2.1\nName: acme-lib\nVersion: 1.0\n")
        filename = original.filename if kind == "wheel" else "acme_lib-1.0.zip"
        form = check_form(_fields(sha256_digest=hashlib.sha256(out.getvalue()).hexdigest()), filename)
        with pytest.raises(UploadRefused) as refused:
            check_file(form, io.BytesIO(out.getvalue()))
        assert refused.value.line == f"{filename} is not a valid {kind}: it lists {member} twice"


class _Unseekable(io.RawIOBase):
    """A sink zipfile cannot seek back in: it then writes each member's sizes after its data."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk: bytes) -> int:  # type: ignore[override]
        self.data += chunk
        return len(chunk)


def test_a_zip_a_streaming_reader_would_read_otherwise_is_refused() -> None:
    """A reader that follows the local headers from the start (a streaming installer) would find
    other members there than the central directory lists: the METADATA it reads could be another."""
    wheel = build_wheel("acme-lib", "1.0")
    hidden = io.BytesIO()
    with zipfile.ZipFile(hidden, "w") as archive:
        archive.writestr("acme_lib-1.0.dist-info/METADATA", "Name: acme-lib\nVersion: 1.0\nRequires-Dist: evil\n")
    local_entries = hidden.getvalue()[: hidden.getvalue().index(b"PK\x01\x02")]
    streamed = _Unseekable()
    with (
        zipfile.ZipFile(streamed, "w", zipfile.ZIP_DEFLATED) as archive,
        zipfile.ZipFile(io.BytesIO(wheel.data)) as source,
    ):
        for info in source.infolist():
            archive.writestr(info.filename, source.read(info))  # each member followed by a data descriptor
    relabelled = bytearray(wheel.data)
    with zipfile.ZipFile(io.BytesIO(wheel.data)) as archive:
        metadata = archive.getinfo("acme_lib-1.0.dist-info/METADATA")
    relabelled[metadata.header_offset + 8] = zipfile.ZIP_STORED  # a streaming reader would not inflate it
    disagrees = "the local header of acme_lib-1.0.dist-info/METADATA disagrees with its central directory entry"
    hidden = f"its bytes 0 to {len(local_entries)} belong to no member it lists"
    for data, refusal in [
        (local_entries + wheel.data, hidden),
        (bytes(relabelled), disagrees),
        (bytes(streamed.data), None),
    ]:
        form = check_form(_fields(sha256_digest=hashlib.sha256(data).hexdigest()), wheel.filename)
        if refusal is None:
            assert check_file(form, io.BytesIO(data))[1] == wheel.metadata
            continue
        with pytest.raises(UploadRefused) as refused:
            check_file(form, io.BytesIO(data))
        assert refused.value.line == f"{wheel.filename} is not a valid wheel: {refusal}"


def test_the_members_of_an_sdist_are_not_all_held_at_once() -> None:
    sdist = _hostile_sdist(b"", 0, members=2000, global_keys=400)  # each member carries the 400 keys
    form = check_form(_fields(sha256_digest=hashlib.sha256(sdist).hexdigest()), "acme_lib-1.0.tar.gz")
    assert check_file(form, io.BytesIO(sdist))[0] == len(sdist)
    assert _peak_memory_of(lambda: check_file(form, io.BytesIO(sdist))) < 4 << 20


def _listing_zip(project: str, count: int) -> bytes:
    """A zip of one empty METADATA whose central directory lists it ``count`` times under other names."""
    name = f"{project}-1.0.dist-info/METADATA".encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
    entry = struct.Struct("<4s6H3L5H2L")
    directory = b"".join(
        entry.pack(b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0) + b"m/%07d" % number
        for number in range(count)
    )
    zip64_end = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), len(local))
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(local) + len(directory), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return local + directory + zip64_end + locator + end


@pytest.mark.parametrize(
    ("filename", "line"),
    [
        ("acme_lib-1.0-py3-none-any.whl", "acme_lib-1.0-py3-none-any.whl is not a valid wheel"),
        ("acme_lib-1.0.zip", "acme_lib-1.0.zip is not a valid sdist"),
    ],
)
def test_a_zip_whose_directory_would_fill_memory_is_refused_unread(filename: str, line: str) -> None:
    count = MAX_ZIP_DIRECTORY_BYTES // 55 + 1  # each listed member costs zipfile several hundred bytes
    bomb = _listing_zip("acme_lib", count)
    form = check_form(_fields(sha256_digest=hashlib.sha256(bomb).hexdigest()), filename)
    with pytest.raises(UploadRefused) as refused:
        check_file(form, io.BytesIO(bomb))
    assert refused.value.line == (
        f"{line}: its central directory of {count * 55} bytes is over {MAX_ZIP_DIRECTORY_BYTES} "
        "(far beyond any real distribution)"
    )
    assert _peak_memory_of(lambda: check_file(form, io.BytesIO(bomb))) < 4 << 20
    assert core_metadata.from_wheel(bomb) is None and core_metadata.from_sdist(bomb, filename) is None


# -- dependency confusion: sync never fills a hosted name from upstream ----------------------------


@pytest.fixture
def confusable(mirror: Mirror, sample: dict, upstream: FakeUpstream) -> Mirror:
    """Upstream publishes ``acme-app`` 9.0 (a hosted name, a higher version) and a public project
    depending on it; the mirror hosts ``acme-*`` and selects both."""
    upstream.add("acme-app", build_wheel("acme-app", "9.0"))
    upstream.add("public-tool", build_wheel("public-tool", "1.0", requires_dist=["acme-app>=1"]))
    mirror.configure('projects:\n  - demo-pkg\n  - acme-app\n  - public-tool\nhosted: ["acme-*"]\n')
    return mirror


def test_an_upstream_project_taking_a_hosted_name_is_never_offered(
    confusable: Mirror, upstream: FakeUpstream, serve, make_venv
) -> None:
    confusable.run("sync", check=True)
    assert upstream.count("/acme-app/") == 0  # not even its page is asked for
    assert "acme-app" not in confusable.git("ls-tree", "-r", "--name-only", "main")
    server = serve()
    token = create_token(confusable, "ci")
    assert form_post(server, token, build_wheel("acme-app", "1.0")).status_code == 200
    upstream.add("acme-app", build_wheel("acme-app", "10.0"))
    assert confusable.run("sync", "--full", check=True).returncode == 0
    page = httpx.get(server.index_url + "acme-app/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    assert page["versions"] == ["1.0"]
    venv = make_venv()
    installed = venv.pip_install(server.index_url, "acme-app", "public-tool")
    assert installed.returncode == 0, installed.stderr
    assert venv.run("import acme_app; print(acme_app.__version__)") == "1.0"


def test_a_hosted_project_tracking_upstream_is_filled_from_it_and_says_so(
    confusable: Mirror, upstream: FakeUpstream, serve, tmp_path: Path
) -> None:
    tracks = upstream.page_url("acme-app")
    confusable.configure(
        "projects:\n  - acme-app\nhosted:\n  - name: acme-app\n"
        f"    tracks: [{tracks}]\n    alternate-locations: [https://other.example/simple/acme-app/]\n"
    )
    confusable.run("sync", check=True)
    server = serve()
    page = httpx.get(server.index_url + "acme-app/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    data = page.json()
    assert data["versions"] == ["9.0"]
    assert data["tracks"] == [tracks]
    assert data["alternate-locations"] == ["https://other.example/simple/acme-app/"]
    html = httpx.get(server.index_url + "acme-app/").text
    assert f'<meta name="pypi:tracks" content="{tracks}">' in html
    assert '<meta name="pypi:alternate-locations" content="https://other.example/simple/acme-app/">' in html
    confusable.run("render", "--out", str(tmp_path / "site"), check=True)
    assert (tmp_path / "site" / "simple" / "acme-app" / "index.json").read_bytes() == page.content
    assert (tmp_path / "site" / "simple" / "acme-app" / "index.html").read_text() == html


# -- a private index: reads need a token too ---------------------------------------------------------


def test_read_auth_requires_a_token_for_every_read(mirror: Mirror, sample: dict, serve, make_venv) -> None:
    mirror.configure('projects:\n  - demo-pkg\nhosted:\n  projects: ["acme-*"]\n  read_auth: true\n')
    mirror.run("sync", check=True)
    token = create_token(mirror, "reader")
    server = serve()
    anonymous = httpx.get(server.index_url + "demo-pkg/")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(server.index_url, auth=("__token__", "gitmirror-wrong")).status_code == 403
    for path in ("/simple/", "/legacy/"):  # bytes beyond ASCII in the header: refused, no traceback
        garbled = httpx.post(server.url + path, headers={"Authorization": b"Basic \xff\xfe"})
        assert garbled.status_code == 403 and "\n" not in garbled.text.strip(), garbled.text
    assert httpx.get(server.index_url + "demo-pkg/", auth=("__token__", token)).status_code == 200
    files = [link for link in sample["demo-pkg"] if link.filename.endswith(".whl")]
    for path in ("/simple/demo-pkg/", f"/files/demo-pkg/{files[0].filename}", "/static/web.css"):
        private = httpx.get(server.url + path, auth=("__token__", token)).headers["cache-control"]
        assert private.startswith("private") and "public" not in private  # no shared cache hands it to others
    assert httpx.get(server.url + f"/files/demo-pkg/{files[0].filename}").status_code == 401
    assert httpx.get(server.url + "/").status_code == 401  # the pages for people are private too
    assert httpx.get(server.url + "/health/ready").status_code == 200  # load balancers probe without a token
    assert form_post(server, token, build_wheel("acme-lib", "1.0")).status_code == 200
    host = server.url.removeprefix("http://")
    venv = make_venv()
    denied = venv.pip_install(server.index_url, "demo-pkg")
    assert denied.returncode != 0
    installed = venv.pip_install(f"http://__token__:{token}@{host}/simple/", "acme-lib", "demo-pkg")
    assert installed.returncode == 0, installed.stderr
    uv_venv = make_venv("uv")
    uv_installed = uv_venv.uv_install(f"http://__token__:{token}@{host}/simple/", "acme-lib")
    assert uv_installed.returncode == 0, uv_installed.stderr
    mirror.run("token", "revoke", "reader", check=True)
    assert httpx.get(server.index_url, auth=("__token__", token)).status_code == 403

    token_file = mirror.repo / "gitmirror-tokens.json"
    kept = token_file.read_bytes()
    token_file.write_text("{damaged")  # every check fails closed, in one line, until it is repaired
    damaged = "tokens cannot be checked: the server's token file is damaged (its log says why)"
    read = httpx.get(server.index_url, auth=("__token__", token))
    assert (read.status_code, read.text) == (503, damaged)
    upload = form_post(server, token, build_wheel("acme-lib", "2.0"))
    assert (upload.status_code, upload.text) == (503, damaged + "\n")
    token_file.write_bytes(kept)
    assert httpx.get(server.index_url, auth=("__token__", token)).status_code == 403


def test_netrc_gives_each_host_its_basic_credentials(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login __token__ password s3cret\ndefault login anyone password other\n")
    netrc.chmod(0o600)
    credentials = NetrcCredentials(netrc)
    assert credentials.header("127.0.0.1") == "Basic " + base64.b64encode(b"__token__:s3cret").decode()
    assert credentials.header("elsewhere.test") == "Basic " + base64.b64encode(b"anyone:other").decode()
    assert NetrcCredentials(tmp_path / "missing").header("127.0.0.1") is None
    (tmp_path / "broken").write_text("machine\n")
    assert NetrcCredentials(tmp_path / "broken").header("127.0.0.1") is None


def test_a_mirror_of_a_private_index_syncs_and_hydrates_with_netrc_credentials(
    mirror: Mirror, sample: dict, serve, tmp_path: Path
) -> None:
    private = 'projects:\n  - demo-pkg\nhosted:\n  projects: ["acme-*"]\n  read_auth: true\n'
    server, token = serving_an_upload(mirror, serve, private, "downstream")
    downstream = Mirror(tmp_path / "downstream", mirror.upstream)
    downstream.root.mkdir()
    (downstream.root / "mirror.yaml").write_text(
        f"upstream: {server.index_url}\nretries: 1\ntimeout: 5\n{TEST_SETTINGS}projects: [demo-pkg, acme-lib]\n"
    )
    refused = downstream.run("sync")
    assert refused.returncode != 0 and "upstream answered HTTP 401: credentials are read from $NETRC" in refused.stderr
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login __token__ password {token}\n")
    netrc.chmod(0o600)
    synced = downstream.run("sync", env={"NETRC": str(netrc)})
    assert synced.returncode == 0, synced.stderr
    assert set(downstream.git("ls-tree", "-r", "--name-only", "main").split()) >= {
        "projects/de/mo/demo-pkg.jsonl",
        "projects/ac/me/acme-lib.jsonl",
    }
    shutil.rmtree(downstream.store)  # an offline copy of the private index gets its blobs the same way
    hydrated = downstream.run("hydrate", "--from", server.url, env={"NETRC": str(netrc)})
    assert hydrated.returncode == 0, hydrated.stderr
    assert downstream.run("verify", check=True).returncode == 0


def test_token_commands_print_the_token_last_and_fail_in_one_line(mirror: Mirror) -> None:
    mirror.configure()
    for command in (("list",), ("create", "ci"), ("revoke", "ci")):  # before init: one line, no file written
        early = mirror.run("token", *command)
        no_repository = "gitmirror: error: no repository at mirror/repo (run `gitmirror init`)\n"
        assert (early.returncode, early.stderr) == (2, no_repository), command
    assert not (mirror.root / "mirror").exists()
    mirror.run("init", check=True)
    created = mirror.run("token", "create", "ci", check=True)
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("gitmirror-") and len(token) > 40
    listed = mirror.run("token", "list", check=True).stdout
    assert listed.startswith("ci\tcreated ") and listed.rstrip().endswith("active") and token not in listed
    again = mirror.run("token", "create", "ci")
    assert (again.returncode, again.stderr) == (2, "gitmirror: error: a token named ci exists\n")
    history = subprocess.run(
        ["git", "--git-dir", str(mirror.repo), "log", "--all", "-p"], env=isolated_env(), capture_output=True, text=True
    )
    assert token not in history.stdout and "gitmirror-tokens" not in history.stdout

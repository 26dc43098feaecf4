"""PEP 740 provenance and PEP 708 data: mirrored from upstream, kept on upload, served from every commit.

A real sync from the loopback upstream records each file's provenance object as a blob and its
digest in the manifest; ``gitmirror serve`` and ``gitmirror render`` give the same pages and bytes;
the record never changes (a conflict when upstream's does, a refused push when a commit edits it);
hostile objects cost one line, never the file. twine uploads attestations; upstream's PEP 708
``tracks`` and ``alternate-locations`` reach the mirror's pages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from test_hook import Remote, assert_refused
from test_upload import HOSTED, create_token, form_post, twine, write

from gitmirror.model.manifest import ManifestError, loads
from gitmirror.model.page import PageAnswer, parse_page
from gitmirror.model.policy import check
from gitmirror.model.provenance import MAX_PROVENANCE_BYTES, ProvenanceError, check_provenance, from_attestations
from gitmirror.storage.store import BlobStore

from conftest import Mirror, RunningServer
from fakeupstream import FakeUpstream, build_wheel

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
WHEEL = "demo_pkg-1.0-py3-none-any.whl"
SDIST = "demo_pkg-1.0.tar.gz"
MANIFEST = "projects/de/mo/demo-pkg.jsonl"


def provenance_object(note: str) -> bytes:
    bundle = {"publisher": {"kind": "GitHub", "claims": {"note": note}}, "attestations": [{"version": 1}]}
    return json.dumps({"version": 1, "attestation_bundles": [bundle]}).encode()


def recorded(mirror: Mirror, ref: str = "main") -> dict[str, dict]:
    lines = mirror.git("show", f"{ref}:{MANIFEST}").splitlines()[1:]
    return {record["filename"]: record for record in map(json.loads, lines)}


def json_files(url: str) -> dict[str, dict]:
    page = httpx.get(url, headers=JSON)
    assert page.status_code == 200, page.text
    return {item["filename"]: item for item in page.json()["files"]}


def test_a_sync_records_provenance_and_every_commit_serves_it(
    mirror: Mirror, upstream: FakeUpstream, sample: dict, serve, tmp_path: Path
) -> None:
    provenance = provenance_object("first")
    upstream.set_provenance("demo-pkg", WHEEL, provenance)
    mirror.run("sync", check=True)
    digest = hashlib.sha256(provenance).hexdigest()
    assert recorded(mirror)[WHEEL]["provenance"] == digest
    assert "provenance" not in recorded(mirror)[SDIST]  # none upstream: no field
    first = mirror.git("rev-parse", "main").strip()

    upstream.add("demo-pkg", build_wheel("demo-pkg", "3.0"))
    mirror.run("sync", check=True)
    assert mirror.git("rev-parse", "main").strip() != first
    server: RunningServer = serve()
    for base in (server.url, f"{server.url}/snapshot/{first}"):
        page_url = f"{base}/simple/demo-pkg/"
        files = json_files(page_url)
        assert files[WHEEL]["provenance"] == f"../../files/demo-pkg/{WHEEL}.provenance"
        assert "provenance" not in files[SDIST]
        html = httpx.get(page_url).text
        assert f'data-provenance="../../files/demo-pkg/{WHEEL}.provenance"' in html
        served = httpx.get(f"{base}/files/demo-pkg/{WHEEL}.provenance")
        assert (served.status_code, served.content) == (200, provenance)
        assert served.headers["content-type"] == "application/json"
        assert served.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{server.url}/files/demo-pkg/{SDIST}.provenance").status_code == 404

    site = tmp_path / "site"
    mirror.run("render", "--out", str(site), check=True)
    assert (site / "simple/demo-pkg/index.json").read_bytes() == httpx.get(
        server.index_url + "demo-pkg/", headers=JSON
    ).content
    assert (site / "simple/demo-pkg/index.html").read_bytes() == httpx.get(server.index_url + "demo-pkg/").content
    assert (site / f"files/demo-pkg/{WHEEL}.provenance").read_bytes() == provenance
    assert mirror.run("verify").returncode == 0


def test_upstream_changing_a_recorded_provenance_is_a_conflict_and_the_record_stays(
    mirror: Mirror, upstream: FakeUpstream, sample: dict
) -> None:
    original = provenance_object("first")
    upstream.set_provenance("demo-pkg", WHEEL, original)
    mirror.run("sync", check=True)
    before = mirror.git("show", f"main:{MANIFEST}")

    rewritten = provenance_object("rewritten")
    upstream.set_provenance("demo-pkg", WHEEL, rewritten)
    result = mirror.run("sync")
    assert result.returncode == 3, result.stdout + result.stderr
    new, old = hashlib.sha256(rewritten).hexdigest(), hashlib.sha256(original).hexdigest()
    assert f"CONFLICT demo-pkg: {WHEEL}.provenance is {new} upstream, the mirror keeps {old}" in result.stderr
    assert mirror.git("show", f"main:{MANIFEST}") == before
    conflict = json.loads(mirror.git("show", "main:conflicts/demo-pkg.jsonl").splitlines()[-1])
    assert (conflict["filename"], conflict["recorded-sha256"], conflict["upstream-sha256"]) == (
        f"{WHEEL}.provenance",
        old,
        new,
    )


def test_hostile_provenance_is_refused_in_one_line_and_the_file_is_kept(
    mirror: Mirror, upstream: FakeUpstream, sample: dict
) -> None:
    upstream.set_provenance("demo-pkg", WHEEL, b'{"version": 1, "attestation_bundles": []' + b" " * (1 << 20) + b"}")
    upstream.set_provenance("demo-pkg", SDIST, b"<html>not json</html>")
    other = "demo_pkg-2.0-py3-none-any.whl"
    upstream.set_provenance("demo-pkg", other, provenance_object("x"), url="http://elsewhere.invalid/p.provenance")
    result = mirror.run("sync")
    assert result.returncode == 1, result.stdout + result.stderr
    errors = sorted(line for line in result.stderr.splitlines() if line.startswith("error: "))
    kept = "(the file is kept without it)"
    refused_host = "refusing 'http://elsewhere.invalid/p.provenance': only the upstream's own host"
    assert errors[0] == f"error: {WHEEL}.provenance: body larger than 1048576 bytes {kept}"
    assert errors[1] == f"error: {SDIST}.provenance: refused, not JSON {kept}"
    assert errors[2].startswith(f"error: {other}.provenance: {refused_host}") and errors[2].endswith(kept)
    files = recorded(mirror)
    assert {WHEEL, SDIST, other} <= set(files)
    assert not any("provenance" in files[name] for name in (WHEEL, SDIST, other))


def test_the_hook_refuses_a_push_that_edits_or_drops_a_recorded_provenance(
    mirror: Mirror, upstream: FakeUpstream, sample: dict, tmp_path: Path
) -> None:
    upstream.set_provenance("demo-pkg", WHEEL, provenance_object("first"))
    mirror.run("sync", check=True)
    remote = Remote(mirror.repo, tmp_path / "hook")
    recorded_digest = recorded(mirror)[WHEEL]["provenance"]

    def edit(records: list[dict]) -> None:
        next(record for record in records if record.get("filename") == WHEEL)["provenance"] = "ab" * 32

    before = remote.state()
    remote.edit(MANIFEST, edit)
    remote.commit("edit a provenance")
    assert_refused(
        remote, before, remote.push(), f"provenance of {WHEEL} changed from {recorded_digest} to {'ab' * 32}"
    )

    remote.git("reset", "-q", "--hard", "origin/main")

    def drop(records: list[dict]) -> None:
        del next(record for record in records if record.get("filename") == WHEEL)["provenance"]

    remote.edit(MANIFEST, drop)
    remote.commit("drop a provenance")
    assert_refused(remote, before, remote.push(), f"provenance of {WHEEL} changed from {recorded_digest} to None")


def test_upstream_pep708_data_reaches_the_served_pages(
    mirror: Mirror, upstream: FakeUpstream, sample: dict, serve
) -> None:
    tracks, alternate = "https://elsewhere.example/simple/demo-pkg/", "https://mirror.example/simple/demo-pkg/"
    upstream.set_pep708("demo-pkg", tracks=[tracks], alternate_locations=[alternate, 'javascript:"><script>'])
    result = mirror.run("sync")
    assert "error: demo-pkg: alternate-locations holds other than http(s) URLs, left out" in result.stderr
    header = json.loads(mirror.git("show", f"main:{MANIFEST}").splitlines()[0])
    assert (header["tracks"], header["alternate-locations"]) == ([tracks], [alternate])
    server = serve()
    page = httpx.get(server.index_url + "demo-pkg/", headers=JSON).json()
    assert (page["tracks"], page["alternate-locations"]) == ([tracks], [alternate])
    html = httpx.get(server.index_url + "demo-pkg/").text
    assert f'<meta name="pypi:tracks" content="{tracks}">' in html
    assert f'<meta name="pypi:alternate-locations" content="{alternate}">' in html

    upstream.set_pep708("demo-pkg")  # upstream drops them: the next commit's page follows
    mirror.run("sync", check=True)
    header = json.loads(mirror.git("show", f"main:{MANIFEST}").splitlines()[0])
    assert "tracks" not in header and "alternate-locations" not in header


@pytest.mark.parametrize("html_only", [False, True])
def test_pages_give_provenance_urls_and_pep708_data(upstream: FakeUpstream, sample: dict, html_only: bool) -> None:
    upstream.html_only = html_only
    upstream.set_provenance("demo-pkg", WHEEL, provenance_object("x"))
    upstream.set_pep708("demo-pkg", tracks=["https://elsewhere.example/simple/demo-pkg/"])
    answer = httpx.get(upstream.page_url("demo-pkg"), headers=JSON)
    headers = {key.lower(): value for key, value in answer.headers.items()}
    project = parse_page("demo-pkg", PageAnswer(answer.status_code, str(answer.url), headers, answer.content))
    urls = {remote.filename: remote.provenance_url for remote in project.files}
    assert urls[WHEEL] == upstream.file_url("demo-pkg", WHEEL) + ".provenance"
    assert urls[SDIST] is None
    assert project.tracks == ["https://elsewhere.example/simple/demo-pkg/"]


def attestation(filename: str, sha256: str) -> dict:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": filename, "digest": {"sha256": sha256}}],
        "predicateType": "https://docs.pypi.org/attestations/publish/v1",
        "predicate": None,
    }
    return {
        "version": 1,
        "verification_material": {"certificate": "MIIB", "transparency_entries": []},
        "envelope": {"statement": base64.b64encode(json.dumps(statement).encode()).decode(), "signature": "MEUC"},
    }


@pytest.fixture
def hosted(mirror: Mirror, sample: dict, serve) -> tuple[Mirror, RunningServer, str]:
    mirror.configure(HOSTED)
    mirror.run("sync", check=True)
    return mirror, serve(), create_token(mirror, "ci")


def test_twine_uploads_attestations_served_back_as_provenance(
    hosted: tuple[Mirror, RunningServer, str], tmp_path: Path
) -> None:
    mirror, server, token = hosted
    wheel = build_wheel("acme-lib", "1.0")
    path = write(tmp_path, wheel)
    sent = attestation(wheel.filename, wheel.sha256)
    attestation_file = path.parent / f"{wheel.filename}.publish.attestation"
    attestation_file.write_text(json.dumps(sent))
    result = twine(server, token, path, attestation_file, "--attestations")  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr

    item = json_files(server.index_url + "acme-lib/")[wheel.filename]
    assert item["provenance"] == f"../../files/acme-lib/{wheel.filename}.provenance"
    served = httpx.get(f"{server.url}/files/acme-lib/{wheel.filename}.provenance")
    provenance = served.json()
    assert provenance["version"] == 1
    bundle = provenance["attestation_bundles"][0]
    assert bundle["publisher"] == {"kind": "gitmirror-token", "claims": {"token": "ci"}}
    assert bundle["attestations"] == [sent]
    manifest = loads(mirror.git("show", "main:projects/ac/me/acme-lib.jsonl").encode())
    assert manifest.files[wheel.filename].provenance == hashlib.sha256(served.content).hexdigest()

    first = mirror.git("rev-parse", "main").strip()  # every later commit serves it the same way
    assert form_post(server, token, build_wheel("acme-lib", "1.1")).status_code == 200
    assert mirror.git("rev-parse", "main").strip() != first
    for base in (server.url, f"{server.url}/snapshot/{first}"):
        page_url = f"{base}/simple/acme-lib/"
        assert json_files(page_url)[wheel.filename]["provenance"] == item["provenance"]
        html = httpx.get(page_url).text
        assert f'data-provenance="../../files/acme-lib/{wheel.filename}.provenance"' in html
        assert httpx.get(f"{base}/files/acme-lib/{wheel.filename}.provenance").content == served.content


def test_an_attestation_for_other_bytes_is_refused(hosted: tuple[Mirror, RunningServer, str]) -> None:
    _mirror, server, token = hosted
    wheel = build_wheel("acme-lib", "1.0")
    wrong = json.dumps([attestation(wheel.filename, "00" * 32)])
    answer = form_post(server, token, wheel, attestations=wrong)
    assert answer.status_code == 400
    assert answer.text == (
        f"attestation 1 is about {wheel.filename} (sha256 {'00' * 32}), not {wheel.filename} (sha256 {wheel.sha256})\n"
    )
    assert httpx.get(server.index_url + "acme-lib/").status_code == 404  # nothing was kept
    shapeless = form_post(server, token, wheel, attestations='[{"version": 1}]')
    assert (shapeless.status_code, shapeless.text) == (
        400,
        "attestation 1 needs an envelope and a verification_material\n",
    )


def test_a_takedown_withholds_the_provenance_and_removes_its_blob(
    mirror: Mirror, upstream: FakeUpstream, sample: dict, serve
) -> None:
    provenance = provenance_object("first")
    upstream.set_provenance("demo-pkg", WHEEL, provenance)
    mirror.run("sync", check=True)
    first = mirror.git("rev-parse", "main").strip()
    mirror.run("takedown", WHEEL, "--reason", "malware", check=True)
    digest = hashlib.sha256(provenance).hexdigest()
    assert not BlobStore(mirror.store).has(digest)
    server = serve()
    for base in (server.url, f"{server.url}/snapshot/{first}"):
        answer = httpx.get(f"{base}/files/demo-pkg/{WHEEL}.provenance")
        assert answer.status_code == 410 and answer.text.startswith(f"{WHEEL} was taken down on ")
    assert WHEEL not in json_files(server.index_url + "demo-pkg/")
    assert mirror.run("verify").returncode == 0


def test_a_hosted_project_tracking_upstream_keeps_its_own_pep708_data(
    mirror: Mirror, upstream: FakeUpstream, sample: dict
) -> None:
    tracks = upstream.page_url("demo-pkg")
    upstream.set_pep708("demo-pkg", tracks=["https://elsewhere.example/simple/demo-pkg/"])
    mirror.configure(f"projects:\n  - demo-pkg\nhosted:\n  - name: demo-pkg\n    tracks: [{tracks}]\n")
    mirror.run("sync", check=True)
    header = json.loads(mirror.git("show", f"main:{MANIFEST}").splitlines()[0])
    assert header["tracks"] == [tracks] and "alternate-locations" not in header
    again = mirror.run("sync", check=True)
    assert "0 changed" in again.stdout and "nothing to commit" in again.stdout
    alternate = "https://other.example/simple/demo-pkg/"
    mirror.configure(
        f"projects:\n  - demo-pkg\nhosted:\n  - name: demo-pkg\n    tracks: [{tracks}]\n"
        f"    alternate-locations: [{alternate}]\n"
    )
    declared = mirror.run("sync", check=True)  # upstream's page unchanged: the configuration still reaches it
    assert "1 changed" in declared.stdout
    header = json.loads(mirror.git("show", f"main:{MANIFEST}").splitlines()[0])
    assert (header["tracks"], header["alternate-locations"]) == ([tracks], [alternate])


def test_a_lost_provenance_blob_is_healed_by_the_next_sync(
    mirror: Mirror, upstream: FakeUpstream, sample: dict
) -> None:
    provenance = provenance_object("first")
    upstream.set_provenance("demo-pkg", WHEEL, provenance)
    mirror.run("sync", check=True)
    digest = hashlib.sha256(provenance).hexdigest()
    blob = BlobStore(mirror.store).path(digest)
    blob.unlink()
    assert mirror.run("verify").returncode != 0
    result = mirror.run("sync", check=True)
    assert "nothing to commit" in result.stdout
    assert blob.read_bytes() == provenance
    assert mirror.run("verify").returncode == 0


def test_policy_and_manifest_treat_provenance_as_frozen_and_optional() -> None:
    line = {"filename": WHEEL, "version": "1.0", "sha256": "aa" * 32, "size": 1, "first-seen": "2026-01-01T00:00:00Z"}
    old_form = b'{"gitmirror-manifest":1,"name":"demo-pkg"}\n' + json.dumps(line).encode() + b"\n"
    manifest = loads(old_form)
    assert manifest.files[WHEEL].provenance is None and b"provenance" not in manifest.dumps()  # no field: as before
    backfilled = manifest.with_file(replace(manifest.files[WHEEL], provenance="bb" * 32))
    assert loads(backfilled.dumps()) == backfilled and b'"provenance":"' + b"bb" * 32 + b'"' in backfilled.dumps()
    assert check(manifest, backfilled, MANIFEST) == []
    changed = backfilled.with_file(replace(backfilled.files[WHEEL], provenance="cc" * 32))
    assert [str(v) for v in check(backfilled, changed, MANIFEST)] == [
        f"{MANIFEST}: provenance of {WHEEL} changed from {'bb' * 32} to {'cc' * 32}"
    ]
    assert len(check(backfilled, manifest, MANIFEST)) == 1  # dropped
    with pytest.raises(ManifestError, match="invalid sha256 digest"):
        loads(old_form.replace(b'"first-seen"', b'"provenance": "../x", "first-seen"'))


def _nested(attestation: dict, depth: int) -> str:
    """``[attestation]`` whose verification material holds lists nested ``depth`` deep."""
    material = '{"certificate": "MIIB", "transparency_entries": ' + "[" * depth + "]" * depth + "}"
    return json.dumps([{**attestation, "verification_material": None}]).replace("null", material)


def test_uploaded_attestations_become_one_provenance_object() -> None:
    sent = attestation(WHEEL, "aa" * 32)
    data = from_attestations(json.dumps([sent]), WHEEL, "aa" * 32, "ci")
    check_provenance(data)
    assert json.loads(data)["attestation_bundles"] == [
        {"publisher": {"kind": "gitmirror-token", "claims": {"token": "ci"}}, "attestations": [sent]}
    ]
    normalized = attestation("Demo.Pkg-1.0-py3-none-any.whl", "aa" * 32)  # PEP 740: compared parsed
    from_attestations(json.dumps([normalized]), WHEEL, "aa" * 32, "ci")
    for field, message in [
        ("not json", "attestations is not JSON"),
        ("[]", "attestations must be a JSON array of one or more attestation objects"),
        ('{"version": 1}', "attestations must be a JSON array of one or more attestation objects"),
        ('[{"version": 2}]', "attestation 1 is not a version 1 attestation object"),
        (_nested(sent, 40), "attestations nest deeper than 32 levels"),
        (_nested(sent, 600), "attestations nest deeper than 32 levels"),  # near the stack limit: a 500
    ]:
        with pytest.raises(ProvenanceError) as refused:
            from_attestations(field, WHEEL, "aa" * 32, "ci")
        assert str(refused.value) == message
    for data, message in [
        (b"\xff", "not JSON"),
        (b"[]", "not a PEP 740 provenance object (version 1 with attestation_bundles)"),
        (b" " * (MAX_PROVENANCE_BYTES + 1), f"larger than {MAX_PROVENANCE_BYTES} bytes"),
    ]:
        with pytest.raises(ProvenanceError, match=re.escape(message)):
            check_provenance(data)


def test_review_carries_a_provenance_backfill_and_holds_pep708_data_for_a_reviewer(
    mirror: Mirror, upstream: FakeUpstream, sample: dict
) -> None:
    mirror.run("sync", check=True)
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\nreview:\n  enabled: true\n  cooldown: 7d\n")
    provenance = provenance_object("later")
    upstream.set_provenance("demo-pkg", WHEEL, provenance)
    tracks = "https://elsewhere.example/simple/demo-pkg/"
    upstream.set_pep708("demo-pkg", tracks=[tracks])
    mirror.run("sync", check=True)
    assert "provenance" not in recorded(mirror)[WHEEL]  # main serves what was approved only
    policy = mirror.run("approve", "--policy", check=True).stdout
    assert recorded(mirror)[WHEEL]["provenance"] == hashlib.sha256(provenance).hexdigest()
    assert f"held demo-pkg: PEP 708 tracks ['{tracks}'], alternate-locations [] (loosens a mark" in policy
    mirror.run("approve", "demo-pkg", check=True)
    assert json.loads(mirror.git("show", f"main:{MANIFEST}").splitlines()[0])["tracks"] == [tracks]


def test_an_html_upstream_provenance_is_mirrored_too(mirror: Mirror, upstream: FakeUpstream, sample: dict) -> None:
    upstream.html_only = True
    provenance = provenance_object("html")
    upstream.set_provenance("demo-pkg", SDIST, provenance)
    mirror.run("sync", check=True)
    assert recorded(mirror)[SDIST]["provenance"] == hashlib.sha256(provenance).hexdigest()

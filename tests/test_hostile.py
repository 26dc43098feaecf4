"""Hostile names and input: nothing outside the repository and store is ever written, errors are one line.

Names come from three untrusted places: the command line and ``mirror.yaml`` (typos, pasted junk),
upstream pages (a compromised or malicious index) and pushed manifests (a hostile contributor).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import Mirror, isolated_env
from fakeupstream import FakeUpstream, build_wheel

EVIL_NAMES = [
    "../../etc",
    "/etc/passwd",
    "..\\..\\windows",
    "dеmo-pkg",  # Cyrillic "е": looks like demo-pkg, is not
    "ｄemo-pkg",  # fullwidth "ｄ"
    "a" * 300,
    "demo-pkg/../other",
    "-rf",
    "",
]


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gitmirror: error: "), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", EVIL_NAMES, ids=range(len(EVIL_NAMES)))
def test_hostile_project_name_on_the_command_line(mirror: Mirror, sample, name: str, tmp_path: Path) -> None:
    before = files_under(tmp_path)
    result = mirror.run("sync", "--", name)
    assert_one_line_error(result)
    assert files_under(tmp_path) == before  # not even the repository was created


@pytest.mark.parametrize(
    "entry",
    [
        '"a\\0b"',
        '"demo-pkg\\x00"',
        '"../x"',
        '"/abs"',
        '"back\\\\slash"',
        '"dеmo-pkg"',
        "'" + "b" * 250 + "'",
        "[nested]",
        "{a: 1}",
        "42",
    ],
)
def test_hostile_project_name_in_mirror_yaml(mirror: Mirror, sample, entry: str, tmp_path: Path) -> None:
    mirror.configure(f"projects:\n  - {entry}\n")
    before = files_under(tmp_path)
    assert_one_line_error(mirror.run("sync"))
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("projects: [demo-pkg\n", "not valid YAML"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("projets: [demo-pkg]\n", "unknown key 'projets'"),
        ("concurrency: many\n", "concurrency must be"),
        ("retries: -1\n", "retries must be"),
        ("timeout: 0\n", "timeout must be"),
        ("upstream: file:///etc/passwd\n", "upstream must be an http(s) URL"),
        ("upstream: [1, 2]\n", "upstream must be"),
        ("repo: 12\n", "repo must be"),
        ('allowed_hosts: ["http://evil/"]\n', "allowed_hosts entries are host names"),
        ('allowed_hosts: "*"\n', "allowed_hosts must be"),
        ("\x00\x01binary", "not valid YAML"),
        ("a: !!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
    ],
)
def test_malformed_mirror_yaml_is_one_clear_line(mirror: Mirror, text: str, message: str, tmp_path: Path) -> None:
    (mirror.root / "mirror.yaml").write_text(text)
    before = files_under(tmp_path)
    result = mirror.run("sync")
    assert_one_line_error(result)
    assert message in result.stderr
    assert files_under(tmp_path) == before


def hostile_page(upstream: FakeUpstream, files: list[dict]) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "demo-pkg", "files": files}).encode()


def test_hostile_upstream_page_entries_are_rejected_one_by_one(
    mirror: Mirror, upstream: FakeUpstream, tmp_path: Path
) -> None:
    good = build_wheel("demo-pkg", "1.0")
    upstream.add("demo-pkg", good)
    foreign = build_wheel("other_lib", "0.1")
    upstream.add("other_lib", foreign)
    digest = {"sha256": good.sha256}
    base = upstream.files_url + "demo-pkg/"
    entries = [
        {"filename": good.filename, "url": base + good.filename, "hashes": digest},
        {"filename": "../../../evil-1.0.tar.gz", "url": base + "x", "hashes": digest},
        {"filename": "/etc/passwd.whl", "url": base + "x", "hashes": digest},
        {"filename": "demo_pkg-1.0\\..\\..\\x.tar.gz", "url": base + "x", "hashes": digest},
        {"filename": "demo_pkg-1.0\u0000.tar.gz", "url": base + "x", "hashes": digest},
        {"filename": "dеmo_pkg-1.0.tar.gz", "url": base + "x", "hashes": digest},
        {"filename": "demo_pkg-1." + "0" * 300 + ".tar.gz", "url": base + "x", "hashes": digest},
        {
            "filename": foreign.filename,
            "url": upstream.file_url("other_lib", foreign.filename),
            "hashes": {"sha256": foreign.sha256},
        },
        {"filename": "demo_pkg-3.0.tar.gz", "url": "file:///etc/passwd", "hashes": digest},
        {"filename": "demo_pkg-4.0.tar.gz", "url": base + "y", "hashes": {"sha256": "../../etc/passwd"}},
    ]
    upstream.fault("/simple/demo-pkg/", "invalid_page", times=-1, body=hostile_page(upstream, entries))
    mirror.configure("projects:\n  - demo-pkg\ndependencies: false\n")
    result = mirror.run("sync")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in ("invalid distribution filename", "not demo-pkg", "non-HTTP", "invalid sha256 digest"):
        assert fragment in result.stderr, fragment
    recorded = [
        json.loads(line)["filename"]
        for line in mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl").splitlines()[1:]
    ]
    assert recorded == [good.filename]
    written = {path.relative_to(mirror.root).parts[0] for path in files_under(mirror.root)}
    assert written <= {"mirror", "mirror.yaml"}
    assert not [path for path in files_under(tmp_path) if "evil" in path.name or "passwd" in path.name]


def test_file_urls_to_other_hosts_follow_allowed_hosts(mirror: Mirror, upstream: FakeUpstream) -> None:
    """Files on another origin are refused by default (plain http, IP literal) and allowed once listed."""
    wheel = build_wheel("demo-pkg", "1.0")
    with FakeUpstream() as elsewhere:
        elsewhere.add("demo-pkg", wheel)
        entry = {
            "filename": wheel.filename,
            "url": elsewhere.file_url("demo-pkg", wheel.filename),
            "hashes": {"sha256": wheel.sha256},
        }
        upstream.add("demo-pkg", build_wheel("demo-pkg", "0.1"))
        upstream.fault("/simple/demo-pkg/", "invalid_page", times=-1, body=hostile_page(upstream, [entry]))

        mirror.configure("projects:\n  - demo-pkg\ndependencies: false\n")
        refused = mirror.run("sync")
        assert refused.returncode == 1
        assert f"{wheel.filename}: refusing" in refused.stderr and "allowed_hosts" in refused.stderr
        assert elsewhere.count("/files/") == 0  # not a single request reached the other host
        assert not (mirror.store / "blobs").exists() or not list((mirror.store / "blobs").glob("*/*/*"))

        mirror.configure("projects:\n  - demo-pkg\ndependencies: false\nallowed_hosts: ['127.0.0.1']\n")
        allowed = mirror.run("sync")
        assert allowed.returncode == 0, allowed.stderr
        assert elsewhere.count("/files/") >= 1
        assert wheel.filename in mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl")


def test_redirect_to_a_host_not_allowed_is_not_followed(mirror: Mirror, upstream: FakeUpstream) -> None:
    from gitmirror.model.hosts import HostNotAllowed, HostPolicy

    policy = HostPolicy(upstream.url)
    policy.check(upstream.file_url("demo-pkg", "demo_pkg-1.0.tar.gz"))
    policy.check("https://files.example.org/packages/x.whl")
    for url in (
        "http://files.example.org/x",
        "https://127.0.0.1/x",
        "https://localhost/x",
        "https://[::1]/x",
        "https://169.254.169.254/latest/meta-data",
        f"http://127.0.0.1:{upstream.port + 1}/x",
        "https://files.example.org:8443/x",
        "ftp://files.example.org/x",
    ):
        with pytest.raises(HostNotAllowed):
            policy.check(url)
    listed = HostPolicy(upstream.url, ("*.example.org", "cache.internal:8080"))
    listed.check("http://files.example.org:9/x")
    listed.check("http://cache.internal:8080/x")
    with pytest.raises(HostNotAllowed):
        listed.check("http://cache.internal:8081/x")
    with pytest.raises(HostNotAllowed):
        listed.check("https://example.org.evil.net/x")


def test_malformed_manifest_push_is_refused_by_the_hook(mirror: Mirror, sample, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    assert mirror.run("install-hook").returncode == 0
    tip = mirror.git("rev-parse", "main").strip()
    work = tmp_path / "clone"
    git = ["git", "-C", str(work)]
    env = isolated_env()
    subprocess.run(["git", "clone", "-q", str(mirror.repo), str(work)], env=env, check=True)
    cases = {
        "projects/de/mo/demo-pkg.jsonl": b"{not json\n",
        "projects/ev/il/evil.jsonl": b'{"gitmirror-manifest":1,"name":"other"}\n',
        "projects/de/mo/Demo_Pkg.jsonl": b'{"gitmirror-manifest":1,"name":"Demo_Pkg"}\n',
        "projects/ab/cd/abcd.jsonl": (
            b'{"gitmirror-manifest":1,"name":"abcd"}\n'
            b'{"filename":"../../x.whl","version":"1","sha256":"' + b"0" * 64 + b'","size":1}\n'
        ),
    }
    for path, data in cases.items():
        subprocess.run([*git, "reset", "-q", "--hard", tip], env=env, check=True)
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        subprocess.run([*git, "add", "-A"], env=env, check=True)
        subprocess.run([*git, "commit", "-qm", f"hostile {path}"], env=env, check=True)
        pushed = subprocess.run([*git, "push", "origin", "HEAD:main"], env=env, capture_output=True, text=True)
        assert pushed.returncode != 0, f"{path} was accepted"
        assert path.split("/")[-1] in pushed.stderr or "manifest" in pushed.stderr, pushed.stderr
        assert mirror.git("rev-parse", "main").strip() == tip


def test_an_allowed_authority_is_remembered_by_its_text_only() -> None:
    """``HostPolicy.check`` remembers the authorities it allowed; what merely shares a prefix with
    one, or hides another host behind white space or user info, is still checked in full."""
    from gitmirror.model.hosts import HostNotAllowed, HostPolicy

    policy = HostPolicy("http://127.0.0.1:8711/simple/")
    policy.check("http://127.0.0.1:8711/packages/a.whl")
    policy.check("http://127.0.0.1:8711/packages/b.whl")
    for url in (
        "http://127.0.0.1:87111/x",
        "http://127.0.0.1:8711@evil.example/x",
        "http://127.0.0.1:8711.evil/x",
        "http://127.0.0.1:8711\t@evil.example/x",
        "https://127.0.0.1:8711/x",
    ):
        with pytest.raises(HostNotAllowed):
            policy.check(url)
    assert policy._allowed_authorities == {"http://127.0.0.1:8711"}

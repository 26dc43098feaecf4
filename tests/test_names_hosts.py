"""Every validator matches its value whole, and the default host policy refuses every spelling of
an IP address or local name that a URL parser or the resolver would turn into one.

A name that passes with a trailing newline is two names for one thing (``$`` matches before a final
``\\n``); a host written ``2130706433`` is ``127.0.0.1`` to ``getaddrinfo``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitmirror.model.hosts import HostNotAllowed, HostPolicy, check_entry
from gitmirror.model.manifest import ManifestError, loads
from gitmirror.model.names import UnsafeNameError, check_filename, check_sha256, is_normalized, normalize
from gitmirror.sync.config import ConfigError, from_mapping
from gitmirror.sync.selection import SelectionError, parse_platform, parse_python, parse_size, parse_versions

from conftest import Mirror
from fakeupstream import FakeUpstream, build_wheel

SPACE = ["\n", "\r\n", "\r", " ", "\t", "\x0b", "\x0c", "\u00a0", "\u2028"]
SHA = "ab" * 32
WHEEL = "demo_pkg-1.0-py3-none-any.whl"

# -- names and digests ------------------------------------------------------------------------


@pytest.mark.parametrize("space", SPACE)
def test_names_and_digests_with_white_space_around_are_refused(space: str) -> None:
    assert check_filename(WHEEL) == WHEEL and check_sha256(SHA) == SHA and normalize("Demo_Pkg") == "demo-pkg"
    for value in (WHEEL + space, space + WHEEL):
        with pytest.raises(UnsafeNameError):
            check_filename(value)
    for value in (SHA + space, space + SHA):
        with pytest.raises(UnsafeNameError):
            check_sha256(value)
    for value in ("demo-pkg" + space, space + "demo-pkg"):
        with pytest.raises(UnsafeNameError):
            normalize(value)
        assert not is_normalized(value)


def manifest(**changes: object) -> bytes:
    entry = {
        "filename": WHEEL,
        "version": "1.0",
        "sha256": SHA,
        "size": 1,
        "requires-python": None,
        "upload-time": "2026-01-01T00:00:00Z",
        "yanked": False,
        "core-metadata": None,
        "first-seen": "2026-01-02T00:00:00Z",
    }
    entry.update(changes)
    header = {"gitmirror-manifest": 1, "name": "demo-pkg"}
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in (header, entry)).encode()


@pytest.mark.parametrize(
    "changes",
    [
        {"sha256": SHA + "\n"},
        {"core-metadata": SHA + "\n"},
        {"filename": WHEEL + "\n"},
        {"upload-time": "2026-01-01T00:00:00Z\n"},
        {"first-seen": "2026-01-02T00:00:00Z "},
        {"upload-time": "\u0662\u0660\u0662\u0666-01-01T00:00:00Z"},  # Arabic-Indic digits are \d too
        {"tombstone": {"reason": "malware", "time": "2026-01-01T00:00:00Z\n"}},
        {"tombstone": {"reason": "malware", "time": "yesterday"}},
    ],
)
def test_a_manifest_line_with_a_value_that_only_starts_right_is_refused(changes: dict) -> None:
    assert loads(manifest()).files[WHEEL].sha256 == SHA
    with pytest.raises(ManifestError, match=r"demo-pkg.jsonl:2: "):
        loads(manifest(**changes), "projects/de/mo/demo-pkg.jsonl")


# -- configuration values ---------------------------------------------------------------------


@pytest.mark.parametrize("space", ["\n", " ", "\t"])
def test_config_values_with_white_space_around_are_refused(space: str, tmp_path: Path) -> None:
    good = {"review": {"enabled": True, "branch": "incoming", "cooldown": "7d"}, "allowed_hosts": ["files.example.org"]}
    assert from_mapping(good, tmp_path).review.cooldown.days == 7
    for bad in (
        {"review": {"branch": "incoming" + space}},
        {"review": {"cooldown": "7d" + space}},
        {"review": {"cooldown": space + "7d"}},
        {"allowed_hosts": ["files.example.org" + space]},
        {"allowed_hosts": [space + "files.example.org"]},
    ):
        with pytest.raises(ConfigError):
            from_mapping(bad, tmp_path)
    parsers = (
        (parse_python, "3.12"),
        (parse_platform, "win_amd64"),
        (parse_versions, "latest"),
        (parse_versions, "2 latest"),
        (parse_size, "100MB"),
    )
    for parse, value in parsers:
        parse(value)
        for bad in (value + space, space + value):
            with pytest.raises(SelectionError):
                parse(bad)
    with pytest.raises(SelectionError):
        parse_python("3.\u0661\u0662")  # Arabic-Indic "12"
    assert check_entry("Files.Example.org:8443") == "files.example.org:8443"


# -- hosts --------------------------------------------------------------------------------------

UPSTREAM = "http://127.0.0.1:8711/simple/"
LOOPBACK_SPELLINGS = [
    "2130706433",  # decimal
    "0x7f000001",  # hex
    "0X7F000001",
    "0x7f.0.0.1",
    "0x7f.1",
    "0177.0.0.1",  # octal
    "017700000001",
    "0177.1",
    "127.1",  # short forms
    "127.0.1",
    "10.1",
    "127.0.0.1.",  # final dot
    "127.000.000.001",
    "[::1]",  # IPv6
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:7f00:1]",
    "[0000:0000:0000:0000:0000:0000:0000:0001]",
    "[fe80::1%25eth0]",  # zone id
    "[::1%251]",
    "169.254.169.254",
    "0251.0376.0251.0376",  # the metadata address in octal
    "0",
    "0.0.0.0",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "foo.localhost",
    "Foo.LocalHost.",
    "localhost.localdomain",
    "printer.local",
    "metadata.google.internal",
    "router.home.arpa",
    "intranet",  # a single label: the resolver's search domains decide where it goes
    "%6c%6fcalhost",  # percent-encoded
    "127%2e0%2e0%2e1",
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # fullwidth digits, which IDNA maps to 127.0.0.1
    "good@127.0.0.1",  # user info: the host is after the @
    "good.example.org@127.0.0.1",
    "good.example.org\\@127.0.0.1",
    "good.example.org:443@0x7f000001",
    "files.example.123",  # ends in a number: an IPv4 address to URL parsers
    "a..example.org",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_an_ip_address_or_local_name_is_refused(host: str) -> None:
    policy = HostPolicy(UPSTREAM)
    with pytest.raises(HostNotAllowed) as refused:
        policy.check(f"https://{host}/packages/demo_pkg-1.0.tar.gz")
    assert "\n" not in str(refused.value) and "allowed_hosts" in str(refused.value)
    listed = HostPolicy(UPSTREAM, ("files.example.org", "*.example.net"))
    with pytest.raises(HostNotAllowed):
        listed.check(f"https://{host}/packages/demo_pkg-1.0.tar.gz")


def test_public_host_names_are_still_followed() -> None:
    policy = HostPolicy(UPSTREAM)
    for url in (
        "https://files.example.org/packages/x.whl",
        "https://Files.Example.ORG./packages/x.whl",
        "https://user@files.example.org/x.whl",
        "https://cdn-1.files_x.example.org/x.whl",
        "https://xn--bcher-kva.example/x.whl",
        "https://0x7f.example.org/x.whl",  # a name that merely starts like a number
        "http://127.0.0.1:8711/packages/x.whl",  # the upstream's own origin
    ):
        policy.check(url)
    listed = HostPolicy(UPSTREAM, ("files.example.org",))
    listed.check("https://files.example.org./x.whl")


def test_the_refusal_names_the_host_and_why() -> None:
    policy = HostPolicy(UPSTREAM)
    with pytest.raises(HostNotAllowed, match=r"2130706433 is an IP address; only the upstream's own host"):
        policy.check("https://2130706433/x.whl")
    with pytest.raises(HostNotAllowed, match=r"foo.localhost is a local name"):
        policy.check("https://foo.localhost./x.whl")


def test_a_page_pointing_at_disguised_loopback_hosts_is_refused_file_by_file(
    mirror: Mirror, upstream: FakeUpstream
) -> None:
    """The fake upstream itself is on 127.0.0.1 (allowed: it is the upstream's origin); its page
    names files on other ports and on port 443 of 127.0.0.1 in disguise, which no request reaches."""
    with FakeUpstream() as elsewhere:
        disguises = [
            f"https://2130706433:{elsewhere.port}",
            f"http://0x7f.1:{elsewhere.port}",
            f"http://localhost.:{elsewhere.port}",
            "https://2130706433",
            "https://0177.0.0.1",
            "https://127.1",
            "https://[::ffff:127.0.0.1]",
            "https://user@localhost.",
        ]
        entries = []
        for number, base in enumerate(disguises, start=1):
            wheel = build_wheel("demo-pkg", f"1.{number}")
            elsewhere.add("demo-pkg", wheel)
            path = elsewhere.file_url("demo-pkg", wheel.filename).split("/", 3)[3]
            entries.append({"filename": wheel.filename, "url": f"{base}/{path}", "hashes": {"sha256": wheel.sha256}})
        page = json.dumps({"meta": {"api-version": "1.1"}, "name": "demo-pkg", "files": entries}).encode()
        upstream.add("demo-pkg", build_wheel("demo-pkg", "0.1"))
        upstream.fault("/simple/demo-pkg/", "invalid_page", times=-1, body=page)
        mirror.configure("projects:\n  - demo-pkg\ndependencies: false\n")
        refused = mirror.run("sync")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "Traceback" not in refused.stderr
        for entry, base in zip(entries, disguises, strict=True):
            lines = [line for line in refused.stderr.splitlines() if entry["filename"] in line]
            assert (
                len(lines) == 1 and f"refusing {base}/" in lines[0].replace("'", "") and "allowed_hosts" in lines[0]
            ), refused.stderr
        assert elsewhere.count("/files/") == 0  # not a single request reached the other server
        assert not (mirror.store / "blobs").exists() or not list((mirror.store / "blobs").glob("*/*/*"))

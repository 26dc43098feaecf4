"""A project page as upstream answered it, parsed into what a sync needs: ``RemoteProject``.

Apart from the HTTP client that fetched it: pages are fetched and parsed in the download processes
(``gitmirror.upstream.workers``) and in the sync's own threads; both hand the same ``PageAnswer`` to
``parse_page``, which reads JSON and HTML pages with pypi_simple. Every name and digest is checked
here, file by file: a hostile entry is rejected with a reason, the rest of the page stays usable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion

from .hosts import needs_credentials
from .manifest import format_time, is_page_url
from .names import UnsafeNameError, check_filename, check_sha256, normalize

if TYPE_CHECKING:
    from pypi_simple import ProjectPage

MAX_PAGE_BYTES = 64 * 1024 * 1024
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
# pypi_simple.ACCEPT_JSON_PREFERRED, spelled out: pages are parsed in the download processes; the sync
# process, which asks for them, need not import pypi_simple
ACCEPT_JSON_PREFERRED = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.5, text/html;q=0.01"
)


class UpstreamError(RuntimeError):
    """A failure talking to upstream, phrased as one line for the per-project report."""


class ProjectNotFound(UpstreamError):
    pass


class LegacyFile(UpstreamError):
    """A file of a type the mirror does not take (``legacy_kind``): skipped with a note, not an error."""

    def __init__(self, filename: str, kind: str) -> None:
        super().__init__(f"{filename}: {kind} file, skipped")
        self.filename = filename
        self.kind = kind


#: what installers read from an index: wheels, and sdists as ``packaging`` parses them
TAKEN_SUFFIXES = (".whl", ".tar.gz", ".zip")
#: types old projects still list that no installer takes from an index: eggs, Windows installers,
#: OS packages, archives in other formats (``packaging`` parses sdists as .tar.gz and .zip only)
LEGACY_SUFFIXES = (
    ".egg",
    ".exe",
    ".msi",
    ".rpm",
    ".dmg",
    ".deb",
    ".tar.bz2",
    ".tbz2",
    ".tbz",
    ".tgz",
    ".tar.xz",
    ".txz",
    ".tar.z",
    ".tar.lz",
    ".tar.zst",
    ".tar",
)


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    url: str
    version: str
    sha256: str
    size: int | None
    requires_python: str | None
    upload_time: str | None
    yanked: bool | str
    core_metadata: str | None
    metadata_url: str | None
    #: where upstream serves the file's PEP 740 provenance object, or None
    provenance_url: str | None = None


@dataclass
class RemoteProject:
    name: str
    files: list[RemoteFile]
    status: str = "active"
    status_reason: str | None = None
    etag: str | None = None
    last_serial: str | None = None
    rejected: list[str] = field(default_factory=list)
    #: filename -> type of the legacy files on the page (``legacy_kind``): skipped, not rejected
    skipped: dict[str, str] = field(default_factory=dict)
    #: PEP 708 data of upstream's page (http(s) URLs only: ``manifest.is_page_url``)
    tracks: list[str] = field(default_factory=list)
    alternate_locations: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PageAnswer:
    """An upstream answer to a page request, redirects followed; ``headers`` with lower-case names."""

    status: int
    url: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def charset(self) -> str | None:
        """The ``charset`` parameter of ``Content-Type``, read by the standard ``email`` header parser."""
        from email.message import Message  # only HTML pages need it: kept out of the processes' start

        message = Message()
        message["content-type"] = self.headers.get("content-type", "")
        return message.get_content_charset()


def check_url(url: str) -> None:
    if urlsplit(url).scheme not in ("http", "https"):
        raise UpstreamError(f"refusing non-HTTP file URL {url!r}")


def project_from(name: str, answer: PageAnswer) -> RemoteProject | None:
    """What a page answer says: the project, None for 304 (the recorded page stands), or an error."""
    if answer.status == 304:
        return None
    if answer.status == 404:
        raise ProjectNotFound(f"{name}: not found upstream")
    if answer.status != 200:
        raise UpstreamError(f"{name}: upstream answered HTTP {answer.status}{needs_credentials(answer.status)}")
    return parse_page(name, answer)


def parse_page(name: str, answer: PageAnswer) -> RemoteProject:
    """A 200 answer's page; raises UpstreamError when it is no valid page."""
    content_type = answer.headers.get("content-type", "text/html").split(";")[0].strip().lower()
    if content_type == JSON_TYPE:
        return _json_page(name, answer)
    if content_type not in ("text/html", "application/vnd.pypi.simple.v1+html"):
        raise UpstreamError(f"{name}: unsupported page content type {content_type!r}")
    from pypi_simple import ProjectPage  # imported here: it brings bs4, pydantic and requests

    _check_html_text(name, answer.body, answer.charset)
    try:
        page = ProjectPage.from_html(name, answer.body, base_url=answer.url, from_encoding=answer.charset)
    except Exception as exc:  # pypi_simple raises many kinds on garbage; all mean "invalid page"
        raise UpstreamError(f"{name}: invalid project page ({type(exc).__name__})") from None
    project = _project_of(name, page, answer, page.tracks, page.alternate_locations)
    for package in page.packages:
        try:
            project.files.append(_remote_file(name, package, answer.url))
        except LegacyFile as exc:
            project.skipped[exc.filename] = exc.kind
        except (UpstreamError, UnsafeNameError) as exc:
            project.rejected.append(str(exc))
    return project


def _json_page(name: str, answer: PageAnswer) -> RemoteProject:
    """A PEP 691 page, read by pypi_simple entry by entry: a malformed file entry is rejected with its
    reason and the rest of the page stays usable (as ``_remote_file`` does for hostile values)."""
    from pypi_simple import ProjectPage, UnsupportedRepoVersionError

    try:
        data = json.loads(answer.body)
    except (ValueError, RecursionError):  # also undecodable bytes, and nesting deeper than the stack
        raise UpstreamError(f"{name}: invalid project page (not JSON)") from None
    files = data.get("files") if isinstance(data, dict) else None
    try:
        if not isinstance(files, list):
            raise ValueError("no list of files")
        page = ProjectPage.from_json_data({**data, "files": []}, answer.url)  # the page, its files apart
    except (UnsupportedRepoVersionError, InvalidVersion):  # the page is valid up to its api-version
        version = data["meta"]["api-version"]
        raise UpstreamError(f"{name}: invalid project page (unsupported api-version {version!r})") from None
    except ValueError:  # pydantic's ValidationError
        raise UpstreamError(f"{name}: invalid project page (not a PEP 691 project page)") from None
    project = _project_of(name, page, answer, data.get("tracks", []), data.get("alternate-locations", []))
    for item in files:
        try:
            project.files.append(_remote_file(name, _json_file(item, name, answer.url), answer.url))
        except LegacyFile as exc:
            project.skipped[exc.filename] = exc.kind
        except (UpstreamError, UnsafeNameError) as exc:
            project.rejected.append(str(exc))
    return project


def _project_of(
    name: str, page: ProjectPage, answer: PageAnswer, tracks: object, alternate_locations: object
) -> RemoteProject:
    """The page-level facts of a pypi_simple ``ProjectPage`` (HTML or JSON alike), its files to come;
    PEP 708's lists come apart (pypi_simple reads them from HTML only)."""
    project = RemoteProject(
        name=name,
        files=[],
        status=str(page.status.value) if page.status else "active",
        status_reason=page.status_reason,
        etag=answer.headers.get("etag"),
        last_serial=str(page.last_serial or answer.headers.get("x-pypi-last-serial") or "") or None,
    )
    project.tracks = _page_urls(project, "tracks", tracks)
    project.alternate_locations = _page_urls(project, "alternate-locations", alternate_locations)
    return project


def _page_urls(project: RemoteProject, key: str, value: object) -> list[str]:
    """Upstream's PEP 708 ``key``, passed through to the mirror's pages: what is no http(s) URL is
    left out with a line (it would end up in a page)."""
    urls = value if isinstance(value, list) else [value]
    kept = [url for url in urls if isinstance(url, str) and is_page_url(url)]
    if len(kept) != len(urls):
        project.rejected.append(f"{project.name}: {key} holds other than http(s) URLs, left out")
    return kept


def _json_file(item: object, project: str, base_url: str) -> object:
    """One ``files`` entry of a PEP 691 page through pypi_simple; a malformed one is refused in one line."""
    from pydantic import ValidationError
    from pypi_simple import DistributionPackage

    filename = item.get("filename") if isinstance(item, dict) else None
    if not isinstance(item, dict) or not isinstance(filename, str):
        raise UpstreamError("a file entry without a filename, skipped")
    size = item.get("size")
    if not isinstance(size, int | None) or isinstance(size, bool):  # pydantic reads "5" and true as sizes
        raise UpstreamError(f"{filename!r}: malformed size, skipped")
    try:
        return DistributionPackage.from_json_data(item, project, base_url)
    except ValidationError as exc:
        field = exc.errors()[0]["loc"][0] if exc.errors() else "file entry"
        raise UpstreamError(f"{filename!r}: malformed {field}, skipped") from None


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _check_html_text(name: str, body: bytes, charset: str | None) -> None:
    """Refuse bytes that are no HTML text: the HTML parser reads garbage as a page without files.

    A page without files is legitimate (upstream deleted them) and marks every recorded file as
    removed upstream, so an unreadable answer must fail loudly instead of looking like that.
    """
    try:
        text = body.decode(charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        raise UpstreamError(f"{name}: invalid project page (not {charset or 'utf-8'} text)") from None
    if _CONTROL_CHARACTERS.search(text):
        raise UpstreamError(f"{name}: invalid project page (control characters in HTML)")


def _remote_file(project: str, package: object, base_url: str = "") -> RemoteFile:
    try:
        filename = check_filename(package.filename)  # type: ignore[attr-defined]
    except UnsafeNameError:
        _skip_if_legacy(package.filename)  # type: ignore[attr-defined]  # .dmg, .deb, .tar.xz...
        raise
    version = _version_of(project, filename)
    sha256 = (package.digests or {}).get("sha256")  # type: ignore[attr-defined]
    if not sha256:
        raise UpstreamError(f"{filename}: upstream gives no sha256, cannot mirror it immutably")
    url = package.url.split("#", 1)[0]  # type: ignore[attr-defined]
    check_url(url)
    metadata_sha = None
    metadata_url = None
    if package.has_metadata:  # type: ignore[attr-defined]
        metadata_sha = (package.metadata_digests or {}).get("sha256")  # type: ignore[attr-defined]
        metadata_url = url + ".metadata" if metadata_sha else None
    upload = package.upload_time  # type: ignore[attr-defined]
    yanked: bool | str = False
    if package.is_yanked:  # type: ignore[attr-defined]
        yanked = package.yanked_reason or True  # type: ignore[attr-defined]
    return RemoteFile(
        filename=filename,
        url=url,
        version=version,
        sha256=check_sha256(str(sha256).lower()),  # digests become store paths: checked per file
        size=package.size,  # type: ignore[attr-defined]
        requires_python=package.requires_python or None,  # type: ignore[attr-defined]
        upload_time=format_time(upload) if upload else None,
        yanked=yanked,
        core_metadata=check_sha256(str(metadata_sha).lower()) if metadata_sha else None,
        metadata_url=metadata_url,
        provenance_url=_provenance_url(package.provenance_url, base_url),  # type: ignore[attr-defined]
    )


def _provenance_url(value: str | None, base_url: str) -> str | None:
    """Where a file's PEP 740 provenance is, relative URLs resolved against the page's (checked when
    fetched: a bad one costs the provenance, not the file)."""
    return urljoin(base_url, value) if value else None


def legacy_kind(filename: object) -> str | None:
    """The type of a file the mirror skips as legacy (``".egg"``, ``".whl (name does not parse)"``),
    or None: a wheel or sdist whose name parses (``_version_of`` checks it further), or a name to
    refuse as unsafe (``check_filename``) whatever its type.
    """
    if not isinstance(filename, str):
        return None
    lower = filename.lower()
    suffix = next((end for end in TAKEN_SUFFIXES + LEGACY_SUFFIXES if lower.endswith(end)), None)
    if suffix is None:
        return None
    try:
        check_filename(filename[: -len(suffix)] + ".whl")  # the name's safety, whatever its type
    except UnsafeNameError:
        return None
    if suffix in LEGACY_SUFFIXES:
        return suffix
    try:
        parse_wheel_filename(filename) if suffix == ".whl" else parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return f"{suffix} (name does not parse)"
    return None


def _skip_if_legacy(filename: str) -> None:
    """Raise ``LegacyFile`` for a file the mirror skips; asked only of names that are no plain
    wheel or sdist, so a page's usual files are parsed once."""
    kind = legacy_kind(filename)
    if kind is not None:
        raise LegacyFile(filename, kind)


def _version_of(project: str, filename: str) -> str:
    """The version a file claims, refusing files that claim to belong to another project."""
    try:
        if filename.endswith(".whl"):
            dist, version, *_ = parse_wheel_filename(filename)
        elif filename.endswith((".tar.gz", ".zip")):
            dist, version = parse_sdist_filename(filename)
        else:
            _skip_if_legacy(filename)
            raise UpstreamError(f"{filename}: not a wheel or sdist")
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        _skip_if_legacy(filename)
        raise UpstreamError(f"{filename}: unparseable distribution filename") from exc
    if normalize(str(dist)) != project:
        raise UpstreamError(f"{filename}: belongs to project {dist}, not {project}")
    return str(version)

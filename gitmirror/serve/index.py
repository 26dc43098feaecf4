"""Rendering the simple repository API (PEP 503 HTML and PEP 691 JSON) from manifests.

Pure functions from manifest to bytes: the live server, snapshots and static rendering all call
these, so every way of serving the index produces the same pages. File URLs are relative
(``../../files/<project>/<filename>``), which lets the same page work under ``/simple/``, under
``/snapshot/<rev>/simple/`` and from a static directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from html import escape
from typing import Any

from ..model.manifest import PROVENANCE_SUFFIX, FileEntry, ProjectManifest

API_VERSION = "1.4"  # PEP 792 (project status) is the newest feature served
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
#: PEP 691's names for "the newest version you serve": answered with the v1 types
LATEST = {"application/vnd.pypi.simple.latest+json": JSON_TYPE, "application/vnd.pypi.simple.latest+html": HTML_TYPE}


def file_url(project: str, entry: FileEntry, files_base: str = "../../") -> str:
    """Where a file is served: relative to its project page, or under ``files_base`` (static renders)."""
    return f"{files_base}files/{project}/{entry.filename}"


def offers_files(manifest: ProjectManifest) -> bool:
    """PEP 792: a quarantined project's files are not offered; archived and deprecated ones are."""
    return manifest.status != "quarantined"


def offered_files(manifest: ProjectManifest) -> list[FileEntry]:
    """The files a project page lists: the served ones, none while the project is quarantined."""
    return manifest.served_files() if offers_files(manifest) else []


def project_json(manifest: ProjectManifest, files_base: str = "../../") -> bytes:
    files = []
    for entry in offered_files(manifest):
        item: dict[str, Any] = {
            "filename": entry.filename,
            "url": file_url(manifest.name, entry, files_base),
            "hashes": {"sha256": entry.sha256},
        }
        if entry.requires_python:
            item["requires-python"] = entry.requires_python
        item["yanked"] = entry.yanked
        item["size"] = entry.size
        if entry.upload_time:
            item["upload-time"] = entry.upload_time
        metadata: dict[str, str] | bool = {"sha256": entry.core_metadata} if entry.core_metadata else False
        item["core-metadata"] = metadata
        item["data-dist-info-metadata"] = metadata
        if entry.provenance:  # PEP 740
            item["provenance"] = file_url(manifest.name, entry, files_base) + PROVENANCE_SUFFIX
        files.append(item)
    page: dict[str, Any] = {
        "meta": {"api-version": API_VERSION},
        "name": manifest.name,
        "versions": manifest.versions() if offers_files(manifest) else [],
        "files": files,
    }
    if manifest.status != "active" or manifest.status_reason:
        status: dict[str, str] = {"status": manifest.status}
        if manifest.status_reason:
            status["reason"] = manifest.status_reason
        page["project-status"] = status
    if manifest.tracks:  # PEP 708
        page["tracks"] = list(manifest.tracks)
    if manifest.alternate_locations:
        page["alternate-locations"] = list(manifest.alternate_locations)
    return json.dumps(page, separators=(",", ":")).encode()


def project_html(manifest: ProjectManifest, files_base: str = "../../") -> bytes:
    name = escape(manifest.name)
    head = [f'<meta name="pypi:repository-version" content="{API_VERSION}">']
    if manifest.status != "active" or manifest.status_reason:
        head.append(f'<meta name="pypi:project-status" content="{escape(manifest.status)}">')
        if manifest.status_reason:
            head.append(f'<meta name="pypi:project-status-reason" content="{escape(manifest.status_reason)}">')
    head += [f'<meta name="pypi:tracks" content="{escape(url)}">' for url in manifest.tracks]  # PEP 708
    head += [f'<meta name="pypi:alternate-locations" content="{escape(url)}">' for url in manifest.alternate_locations]
    links = []
    for entry in offered_files(manifest):
        attributes = [f'href="{escape(file_url(manifest.name, entry, files_base))}#sha256={entry.sha256}"']
        if entry.requires_python:
            attributes.append(f'data-requires-python="{escape(entry.requires_python)}"')
        if entry.is_yanked:
            attributes.append(f'data-yanked="{escape(entry.yanked_reason or "")}"')
        if entry.core_metadata:
            attributes.append(f'data-core-metadata="sha256={entry.core_metadata}"')
            attributes.append(f'data-dist-info-metadata="sha256={entry.core_metadata}"')
        if entry.provenance:  # PEP 740
            provenance = file_url(manifest.name, entry, files_base) + PROVENANCE_SUFFIX
            attributes.append(f'data-provenance="{escape(provenance)}"')
        links.append(f"    <a {' '.join(attributes)}>{escape(entry.filename)}</a><br>")
    return _html_page(f"Links for {name}", head, links)


def root_json(names: Iterable[str]) -> bytes:
    page = {"meta": {"api-version": API_VERSION}, "projects": [{"name": name} for name in names]}
    return json.dumps(page, separators=(",", ":")).encode()


def root_html(names: Iterable[str]) -> bytes:
    links = [f'    <a href="{escape(name)}/">{escape(name)}</a><br>' for name in names]
    return _html_page("Simple index", [f'<meta name="pypi:repository-version" content="{API_VERSION}">'], links)


def _html_page(title: str, head: list[str], body: list[str]) -> bytes:
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        '    <meta charset="utf-8">',
        *(f"    {line}" for line in head),
        f"    <title>{title}</title>",
        "  </head>",
        "  <body>",
        f"    <h1>{title}</h1>",
        *body,
        "  </body>",
        "</html>",
    ]
    return ("\n".join(lines) + "\n").encode()


def choose_format(accept: str | None) -> str | None:
    """Pick JSON, versioned HTML or plain HTML from an Accept header (PEP 691 negotiation).

    Returns the media type to answer with, or None when the client accepts none of them (406).
    Ties keep the order of preference JSON, versioned HTML, text/html; the ``latest`` names stand
    for the v1 types.
    """
    if not accept:
        return TEXT_HTML
    offered = (JSON_TYPE, HTML_TYPE, TEXT_HTML)
    best: tuple[float, int, str] | None = None
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        # Wildcards get HTML, the one form every client understands.
        wildcards = {"*/*": [TEXT_HTML], "text/*": [TEXT_HTML], "application/*": [HTML_TYPE]}
        media = LATEST.get(media.lower(), media.lower())
        candidates = [media] if media in offered else wildcards.get(media, [])
        for candidate in candidates:
            rank = (quality, -offered.index(candidate), candidate)
            if quality > 0 and (best is None or rank > best):
                best = rank
    return best[2] if best else None

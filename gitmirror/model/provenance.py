"""PEP 740 provenance objects: what the mirror accepts as one, and the one it builds for an upload.

A provenance object is a small JSON object (``{"version": 1, "attestation_bundles": [...]}``) served
beside its file at ``<file URL>.provenance``. Mirrored ones are kept byte for byte as upstream served
them, so only their form is checked here: JSON, an object, within ``MAX_PROVENANCE_BYTES``. Uploads
send attestation objects (the upload form's ``attestations`` field, a JSON array); the mirror wraps
them in a provenance object of its own. Nothing here verifies a signature: that is left to clients.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename

#: the most bytes of one provenance object kept (an attestation is a small JSON document)
MAX_PROVENANCE_BYTES = 1 << 20
#: the deepest an upload's attestations may nest (real ones: a handful of levels); deeper ones would
#: leave too little of the stack to write the provenance object, or to read it back
MAX_ATTESTATION_DEPTH = 32
#: the publisher kind of uploads' provenance: an API token of this mirror, not a Trusted Publisher
TOKEN_PUBLISHER = "gitmirror-token"


class ProvenanceError(ValueError):
    """A provenance object or attestation the mirror refuses; the message is one line."""


def check_provenance(data: bytes) -> None:
    """Refuse what is no PEP 740 provenance object: too large, not JSON, not a version 1 object."""
    if len(data) > MAX_PROVENANCE_BYTES:
        raise ProvenanceError(f"larger than {MAX_PROVENANCE_BYTES} bytes")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # undecodable bytes too
        raise ProvenanceError("not JSON") from None
    if (
        not isinstance(value, dict)
        or value.get("version") != 1
        or not isinstance(value.get("attestation_bundles"), list)
    ):
        raise ProvenanceError("not a PEP 740 provenance object (version 1 with attestation_bundles)")


def from_attestations(field: str, filename: str, sha256: str, uploader: str) -> bytes:
    """The provenance object of an upload's ``attestations`` field: one bundle, published by the
    token that uploaded. Each attestation must be a version 1 attestation object whose statement
    names this file and its sha256 (its signature is not verified)."""
    try:
        attestations = json.loads(field)
    except (ValueError, RecursionError):
        raise ProvenanceError("attestations is not JSON") from None
    if not isinstance(attestations, list) or not attestations:
        raise ProvenanceError("attestations must be a JSON array of one or more attestation objects")
    if _depth(attestations) > MAX_ATTESTATION_DEPTH:
        raise ProvenanceError(f"attestations nest deeper than {MAX_ATTESTATION_DEPTH} levels")
    for number, attestation in enumerate(attestations, start=1):
        _check_attestation(attestation, filename, sha256, number)
    provenance = {
        "version": 1,
        "attestation_bundles": [
            {"publisher": {"kind": TOKEN_PUBLISHER, "claims": {"token": uploader}}, "attestations": attestations}
        ],
    }
    data = json.dumps(provenance, separators=(",", ":"), ensure_ascii=True).encode()
    if len(data) > MAX_PROVENANCE_BYTES:
        raise ProvenanceError(f"attestations larger than {MAX_PROVENANCE_BYTES} bytes")
    return data


def _depth(value: Any) -> int:
    """How deeply ``value`` (parsed JSON) nests arrays and objects, counted without recursing."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            pending += [(child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)]
    return deepest


def _check_attestation(attestation: Any, filename: str, sha256: str, number: int) -> None:
    where = f"attestation {number}"
    if not isinstance(attestation, dict) or attestation.get("version") != 1:
        raise ProvenanceError(f"{where} is not a version 1 attestation object")
    envelope, material = attestation.get("envelope"), attestation.get("verification_material")
    if not isinstance(envelope, dict) or not isinstance(material, dict):
        raise ProvenanceError(f"{where} needs an envelope and a verification_material")
    try:
        statement = json.loads(base64.b64decode(envelope.get("statement", ""), validate=True))
        subjects = statement["subject"]
        named, digest = subjects[0]["name"], subjects[0]["digest"]["sha256"]
    except (ValueError, TypeError, KeyError, IndexError, binascii.Error, RecursionError):
        raise ProvenanceError(f"{where}: its envelope statement is no in-toto statement with a subject") from None
    if len(subjects) != 1 or not _same_distribution(named, filename) or digest != sha256:
        raise ProvenanceError(f"{where} is about {named} (sha256 {digest}), not {filename} (sha256 {sha256})")


def _same_distribution(named: object, filename: str) -> bool:
    """PEP 740: a statement's subject may name the file in normalized form; names are compared parsed."""
    if not isinstance(named, str):
        return False
    parse = parse_wheel_filename if filename.endswith(".whl") else parse_sdist_filename
    try:
        return parse(named) == parse(filename)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return named == filename

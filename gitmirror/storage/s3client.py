"""Reaching a bucket: the settings of ``store: s3://BUCKET/PREFIX`` and ``s3:``, the obstore client
with the AWS credentials, and creating the bucket (``gitmirror init``).

obstore moves the bytes; credentials come from the standard AWS environment variables (read by
obstore) or, when there are none, from boto3's chain (the AWS files, profiles, SSO). Both are
imported only by a run that opens a bucket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .blobs import S3_SCHEME

if TYPE_CHECKING:
    from obstore.store import S3Store as ObjectStore


class S3Error(OSError):
    """A bucket that cannot be used (missing client, refused credentials, unreachable endpoint)."""


@dataclass(frozen=True)
class S3Settings:
    """Where the bucket is and how to reach it (``store: s3://BUCKET/PREFIX`` and ``s3:`` in mirror.yaml)."""

    bucket: str
    prefix: str = ""  # without slashes at either end
    endpoint_url: str | None = None  # None: AWS itself
    region: str | None = None  # None: from the AWS configuration, else us-east-1
    profile: str | None = None  # a profile of the AWS files; None: the default chain
    presign_seconds: int = 0  # serve: redirect file requests to presigned URLs valid this long (0: stream)

    @property
    def url(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{S3_SCHEME}{self.bucket}"


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://BUCKET/PREFIX``; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"expected s3://BUCKET/PREFIX, got {url!r}")
    return parts.netloc, parts.path.strip("/")


def client_for(settings: S3Settings) -> ObjectStore:
    """obstore's client for the bucket. Credentials in the environment are read by obstore itself;
    boto3 (its chain: the AWS files, profiles, SSO) is asked only when there are none or a profile
    is named, so the download processes of an ordinary sync do not each import it."""
    try:
        from obstore.store import S3Store as ObjectStore
    except ImportError:
        raise S3Error("an s3:// store needs obstore and boto3: pip install 'gitmirror[s3]'") from None
    endpoint = endpoint_url(settings)
    region = settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    options: dict[str, Any] = {}
    if settings.profile or not os.environ.get("AWS_ACCESS_KEY_ID"):
        from obstore.auth.boto3 import Boto3CredentialProvider

        session = _session(settings)
        region = region or session.region_name
        options["credential_provider"] = Boto3CredentialProvider(session)
    config: dict[str, Any] = {"region": region or "us-east-1"}
    if endpoint:
        config["endpoint"] = endpoint
    return ObjectStore(
        settings.bucket,
        prefix=settings.prefix or None,
        config=config,  # type: ignore[arg-type]
        client_options={"allow_http": (endpoint or "").startswith("http://")},
        checksum_algorithm="sha256",
        **options,
    )


def endpoint_url(settings: S3Settings) -> str | None:
    """The endpoint: mirror.yaml's, else the standard ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``."""
    return settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _session(settings: S3Settings) -> Any:
    import boto3  # type: ignore[import-untyped]
    import botocore.exceptions  # type: ignore[import-untyped]

    try:
        return boto3.Session(profile_name=settings.profile, region_name=settings.region)
    except botocore.exceptions.ProfileNotFound as exc:
        raise S3Error(f"{settings.url}: {exc}") from None


def create_bucket(settings: S3Settings) -> bool:
    """Create the bucket unless it exists; returns whether it was created."""
    import botocore.exceptions

    session = _session(settings)
    client = session.client("s3", endpoint_url=endpoint_url(settings), region_name=settings.region or "us-east-1")
    try:
        client.head_bucket(Bucket=settings.bucket)
        return False
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise S3Error(f"{settings.url}: {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise S3Error(f"{settings.url}: {exc}") from None
    region = settings.region or session.region_name or "us-east-1"
    extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        client.create_bucket(Bucket=settings.bucket, **extra)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise S3Error(f"{settings.url}: cannot create the bucket: {exc}") from None
    return True

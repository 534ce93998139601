"""Blobs in an S3 bucket (AWS, or any S3-compatible store: MinIO, Ceph, ...).

An object per blob, ``{prefix}blobs/ab/abcdef...``. S3 writes an object whole or not at all,
and reads after a write see it (strong read-after-write consistency, as on AWS since 2020;
check it holds for another store), so two writers of one blob need no coordination: both
write the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shardrag.blobs.base import check_digest
from shardrag.errors import InternalError, InvalidParameter, NotFound, Unavailable

# What S3 answers for a key, or a bucket, that is not there (a HEAD has no body: "404").
_NO_OBJECT = frozenset({"404", "NotFound", "NoSuchKey"})
_NO_BUCKET = frozenset({"404", "NotFound", "NoSuchBucket"})


class S3BlobStore:
    """Content-addressed objects in ``bucket``, under ``prefix`` (a folder, "" for the root).

    Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID`` ..., ``~/.aws``, an
    instance or pod role). ``endpoint_url`` points at another S3-compatible store, addressed
    path-style (``endpoint/bucket/key``), which they all accept. Opening only checks that the
    bucket can be reached (``Unavailable`` otherwise); it creates nothing. One client serves
    every thread: boto3 clients are thread-safe. Requests time out after 2 s connecting and
    10 s waiting, and are tried 3 times at most (botocore's standard retry mode); what still
    fails is ``Unavailable``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        if not bucket:
            raise InvalidParameter("an S3 blob store needs a bucket", setting="blob_url")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        config = Config(
            connect_timeout=2,
            read_timeout=10,
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=32,
            # Other stores may not know the checksums botocore adds by default (CRC32); a
            # blob is checked by its Content-MD5 on the way in, its SHA-256 on the way out.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        # A session is not thread-safe, a client is: both are made here, once.
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        self._where = f"s3://{bucket}/{self.prefix} at {self._client.meta.endpoint_url}"
        try:
            self._client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _code(exc) in _NO_BUCKET:
                raise Unavailable(f"no S3 bucket {bucket!r} at {self._where}") from None
            raise self._unavailable("reaching the bucket", exc) from None
        except BotoCoreError as exc:
            raise self._unavailable("reaching the bucket", exc) from None

    def _key(self, digest: str) -> str:
        check_digest(digest)
        return f"{self.prefix}blobs/{digest[:2]}/{digest}"

    def _unavailable(self, action: str, error: Exception) -> Unavailable:
        return Unavailable(f"{action} failed on {self._where}: {error}", bucket=self.bucket)

    def put(self, data: bytes, owner: str | None = None) -> str:
        """Store ``data`` unless it is there already; return its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        self.put_named(digest, data)
        return digest

    def put_named(self, digest: str, data: bytes) -> None:
        """Store ``data`` under a name of a digest's form that is not its own SHA-256 (an
        encrypted blob, ``encrypted.py``); a name stored already is left as it is."""
        if self.exists(digest):
            return
        # S3 refuses the object if the bytes it received do not have this MD5.
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(digest), Body=data, ContentMD5=md5
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"storing blob {digest}", exc) from None

    def get(self, digest: str, owner: str | None = None) -> bytes:
        """The stored bytes, checked against ``digest``; NotFound if absent."""
        data = self.get_named(digest)
        if hashlib.sha256(data).hexdigest() != digest:
            raise InternalError(f"blob {digest} in {self._where} is corrupt", digest=digest)
        return data

    def get_named(self, digest: str) -> bytes:
        """The bytes stored under a name (``put_named``); NotFound if absent."""
        key = self._key(digest)
        try:
            data: bytes = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in _NO_OBJECT:
                raise NotFound(f"no blob {digest}", digest=digest) from None
            raise self._unavailable(f"reading blob {digest}", exc) from None
        except BotoCoreError as exc:
            raise self._unavailable(f"reading blob {digest}", exc) from None
        return data

    def exists(self, digest: str, owner: str | None = None) -> bool:
        """Whether the blob is stored."""
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(digest))
        except ClientError as exc:
            if _code(exc) in _NO_OBJECT:
                return False
            raise self._unavailable(f"looking up blob {digest}", exc) from None
        except BotoCoreError as exc:
            raise self._unavailable(f"looking up blob {digest}", exc) from None
        return True


def _code(error: ClientError) -> str:
    code: str = error.response.get("Error", {}).get("Code", "")
    return code

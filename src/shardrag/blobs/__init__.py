"""The cold tier: originals by content hash, in a directory (shared or not) or an S3 bucket."""

from pathlib import Path
from urllib.parse import unquote, urlsplit

from shardrag.blobs.base import BlobStore
from shardrag.blobs.local import LocalBlobStore
from shardrag.errors import InvalidParameter
from shardrag.extras import require_extra


def open_blob_store(
    data_dir: Path,
    url: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> BlobStore:
    """The blob store at ``url``, or the data dir's own without one.

    ``url`` is ``file:///abs/dir`` or ``/abs/dir`` (a directory, which several processes and
    hosts may share) or ``s3://bucket/optional/prefix`` (an S3 bucket, on AWS or at
    ``endpoint_url``, in ``region``).
    """
    if url is None:
        return LocalBlobStore(data_dir / "blobs")
    parts = urlsplit(url)
    if parts.scheme == "s3" and parts.netloc:
        require_extra("boto3", "cluster", "the S3 blob store")
        from shardrag.blobs.s3 import S3BlobStore  # boto3 loads only when it is used

        return S3BlobStore(parts.netloc, unquote(parts.path), endpoint_url, region)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        directory = Path(unquote(parts.path))
    elif not parts.scheme:
        directory = Path(url)
    else:
        directory = None
    if directory is not None and directory.is_absolute():
        return LocalBlobStore(directory)
    raise InvalidParameter(
        f"blob_url must be file:///abs/dir, an absolute path or s3://bucket/prefix, "
        f"not {url!r:.200}",
        setting="blob_url",
    )


__all__ = ["BlobStore", "LocalBlobStore", "open_blob_store"]

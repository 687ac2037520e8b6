"""Small files in a run's storage: a local path or s3://bucket/key.

Local writes go through a temp file renamed into place; S3 writes are one PUT (S3 never shows a
partial object). boto3 reads the usual AWS_* variables, AWS_ENDPOINT_URL included, as Ray's own
checkpoint uploads do, so one environment serves both.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlparse

from xdlm.errors import UserError


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))


def bucket_and_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise UserError(f"cluster.storage_path: {uri!r} must be a local path or s3://bucket/prefix")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client():
    import boto3

    return boto3.client("s3")


def s3_error_code(err: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` ("404", "NoSuchKey", ...), else None."""
    return getattr(err, "response", {}).get("Error", {}).get("Code")


def exists(uri: str) -> bool:
    if is_local(uri):
        return os.path.exists(local_path(uri))
    bucket, key = bucket_and_key(uri)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except Exception as err:  # botocore ClientError 404
        if s3_error_code(err) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def read_text(uri: str) -> str:
    if is_local(uri):
        with open(local_path(uri)) as f:
            return f.read()
    bucket, key = bucket_and_key(uri)
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def write_text(uri: str, text: str) -> None:
    """Whole-or-nothing write of a small text file."""
    if not is_local(uri):
        bucket, key = bucket_and_key(uri)
        s3_client().put_object(Bucket=bucket, Key=key, Body=text.encode())
        return
    path = local_path(uri)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def delete(uri: str) -> None:
    """Remove a small file; a file that is already gone is fine."""
    if is_local(uri):
        try:
            os.remove(local_path(uri))
        except FileNotFoundError:
            pass
        return
    bucket, key = bucket_and_key(uri)
    s3_client().delete_object(Bucket=bucket, Key=key)

#!/usr/bin/env python3
"""Create and check the S3 buckets xdlm writes to (checkpoints, run records, MLflow artifacts).

    python infra/storage/buckets.py create team-xdlm-runs [--noncurrent-days 30]
    python infra/storage/buckets.py check team-xdlm-runs     # exit 1 and the list of what is missing
    python infra/storage/buckets.py policy team-xdlm-runs --prefix xdlm/   # the IAM policy for jobs

A bucket is ready when it has

- versioning: an overwritten or deleted ``xdlm_run.json``/checkpoint file can be recovered;
- lifecycle rules: noncurrent versions (what ``train.keep_checkpoints`` retention and overwrites
  leave behind) expire after N days, expired delete markers go, and incomplete multipart uploads
  (a checkpoint copy killed mid-way) are aborted after a week, so old checkpoints stop costing;
- public access blocked (where the endpoint implements it: AWS does, many S3-compatible stores do
  not, which is reported, not treated as missing);
- default encryption (SSE-S3).

Credentials, region and endpoint come from the standard AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``) or ``--endpoint-url``.
``create`` is idempotent: run it again to repair a bucket ``check`` complains about.
Exit status: 0 ready, 1 something missing, 2 a usage or access error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NONCURRENT_RULE = "xdlm-expire-noncurrent-versions"
MULTIPART_RULE = "xdlm-abort-incomplete-multipart"
#: What a training job, a sweep or the MLflow server does with objects, and nothing more: no
#: s3:DeleteObjectVersion (a job can delete, i.e. add a delete marker, but history stays until the
#: lifecycle rule expires it), no bucket configuration, no other bucket.
JOB_ACTIONS = {
    "bucket": ["s3:ListBucket", "s3:GetBucketLocation"],
    "objects": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts"],
}
POLICY_EXAMPLE = Path(__file__).with_name("policy.example.json")
# Error codes of endpoints that do not implement an API (moto, MinIO, Ceph differ in wording).
UNSUPPORTED = {"NotImplemented", "MethodNotAllowed", "XNotImplemented", "InvalidRequest", "UnsupportedOperation"}


class Failure(Exception):
    """A usage or access error: printed as one line, exit status 2."""


def s3_client(endpoint_url: str | None):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 3}))


def error_code(err: Exception) -> str:
    return getattr(err, "response", {}).get("Error", {}).get("Code", "")


def lifecycle_rules(noncurrent_days: int, multipart_days: int) -> list[dict]:
    """The bucket's lifecycle: current objects are never expired by age (a run's newest
    checkpoint may be months old); only superseded versions and abandoned uploads are."""
    everything = {"Prefix": ""}
    return [
        {"ID": NONCURRENT_RULE, "Status": "Enabled", "Filter": everything,
         "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_days},
         "Expiration": {"ExpiredObjectDeleteMarker": True}},
        {"ID": MULTIPART_RULE, "Status": "Enabled", "Filter": everything,
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": multipart_days}},
    ]


def create(s3, bucket: str, noncurrent_days: int, multipart_days: int) -> list[str]:
    """Create ``bucket`` if needed and apply every setting; returns notes (unsupported settings)."""
    from botocore.exceptions import ClientError

    region = s3.meta.region_name
    kwargs = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        # asked first: in us-east-1, CreateBucket of a bucket one already owns simply succeeds
        if bucket_exists(s3, bucket):
            print(f"{bucket}: exists")
        else:
            s3.create_bucket(Bucket=bucket, **kwargs)
            print(f"{bucket}: created")
    except ClientError as err:
        if error_code(err) == "BucketAlreadyOwnedByYou":
            print(f"{bucket}: exists")
        elif error_code(err) == "BucketAlreadyExists":
            raise Failure(f"{bucket}: the name is taken by another account; choose another bucket name") from None
        else:
            raise
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": lifecycle_rules(noncurrent_days, multipart_days)})
    notes = []
    try:
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})
    except ClientError as err:
        if error_code(err) not in UNSUPPORTED:
            raise
        notes.append(f"{bucket}: this endpoint does not support blocking public access ({error_code(err)}); "
                     "make sure its bucket policy grants nothing to anonymous users")
    try:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    except ClientError as err:
        if error_code(err) not in UNSUPPORTED:
            raise
        notes.append(f"{bucket}: this endpoint does not support default encryption ({error_code(err)})")
    return notes


def bucket_exists(s3, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except ClientError as err:
        if error_code(err) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise


def missing(s3, bucket: str) -> tuple[list[str], list[str]]:
    """(what ``bucket`` lacks, notes on what the endpoint cannot do)."""
    from botocore.exceptions import ClientError

    if not bucket_exists(s3, bucket):
        return ["the bucket itself"], []
    lacks, notes = [], []
    if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        lacks.append("versioning")
    try:
        rules = [r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] if r.get("Status") == "Enabled"]
    except ClientError as err:
        if error_code(err) != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    if not any("NoncurrentVersionExpiration" in r for r in rules):
        lacks.append("a lifecycle rule expiring noncurrent versions")
    if not any("AbortIncompleteMultipartUpload" in r for r in rules):
        lacks.append("a lifecycle rule aborting incomplete multipart uploads")
    try:
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        if not all(block.get(k) for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                                          "RestrictPublicBuckets")):
            lacks.append("a complete public access block")
    except ClientError as err:
        if error_code(err) == "NoSuchPublicAccessBlockConfiguration":
            lacks.append("a public access block")
        elif error_code(err) in UNSUPPORTED:
            notes.append(f"{bucket}: public access block not supported by this endpoint")
        else:
            raise
    try:
        s3.get_bucket_encryption(Bucket=bucket)
    except ClientError as err:
        if error_code(err) == "ServerSideEncryptionConfigurationNotFoundError":
            lacks.append("default encryption")
        elif error_code(err) in UNSUPPORTED:
            notes.append(f"{bucket}: default encryption not supported by this endpoint")
        else:
            raise
    return lacks, notes


def job_policy(buckets: list[str], prefix: str) -> dict:
    """The least-privilege policy for the jobs' role: list and locate the buckets, read and write
    objects under ``prefix`` only."""
    prefix = prefix.strip("/")
    objects = f"{prefix}/*" if prefix else "*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListTheRunBuckets", "Effect": "Allow", "Action": list(JOB_ACTIONS["bucket"]),
             "Resource": [f"arn:aws:s3:::{b}" for b in buckets]},
            {"Sid": "ReadWriteRunObjects", "Effect": "Allow", "Action": list(JOB_ACTIONS["objects"]),
             "Resource": [f"arn:aws:s3:::{b}/{objects}" for b in buckets]},
        ],
    }


def policy_problems(policy: dict, buckets: list[str]) -> list[str]:
    """Why ``policy`` grants more than the jobs need (empty: it does not)."""
    allowed = {*JOB_ACTIONS["bucket"], *JOB_ACTIONS["objects"]}
    arns = tuple(f"arn:aws:s3:::{b}" for b in buckets)
    problems = []
    for i, st in enumerate(policy.get("Statement", [])):
        actions = st.get("Action", [])
        resources = st.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if st.get("Effect") != "Allow" or "NotAction" in st or "NotResource" in st or "Principal" in st:
            problems.append(f"statement {i}: only plain Allow statements are expected")
        problems += [f"statement {i}: action {a} is not needed" for a in actions if a not in allowed]
        for r in resources:
            if not (r in arns or r.startswith(tuple(a + "/" for a in arns))):
                problems.append(f"statement {i}: resource {r} is outside {', '.join(buckets)}")
        if any(a in JOB_ACTIONS["objects"] for a in actions) and any(r in arns for r in resources):
            problems.append(f"statement {i}: object actions on a bucket ARN")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="create the buckets (idempotent) and apply every setting")
    c.add_argument("buckets", nargs="+", metavar="BUCKET")
    c.add_argument("--noncurrent-days", type=int, default=30,
                   help="days a superseded or deleted object version is kept (default 30)")
    c.add_argument("--multipart-days", type=int, default=7,
                   help="days before an incomplete multipart upload is aborted (default 7)")
    k = sub.add_parser("check", help="report what each bucket lacks; exit 1 if anything")
    k.add_argument("buckets", nargs="+", metavar="BUCKET")
    p = sub.add_parser("policy", help="print the jobs' least-privilege IAM policy for these buckets")
    p.add_argument("buckets", nargs="+", metavar="BUCKET")
    p.add_argument("--prefix", default="xdlm/", help="the only key prefix jobs may touch (default xdlm/)")
    args = ap.parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if args.command == "policy":
            policy = job_policy(args.buckets, args.prefix)
            problems = policy_problems(policy, args.buckets)
            if problems:  # the generator itself is wrong: never print a broader policy
                raise Failure("; ".join(problems))
            print(json.dumps(policy, indent=2))
            return 0
        if args.command == "create" and min(args.noncurrent_days, args.multipart_days) < 1:
            raise Failure("--noncurrent-days and --multipart-days must be >= 1")
        s3 = s3_client(args.endpoint_url)
        status = 0
        for bucket in args.buckets:
            if args.command == "create":
                notes = create(s3, bucket, args.noncurrent_days, args.multipart_days)
                lacks, more = missing(s3, bucket)
                notes += more
            else:
                lacks, notes = missing(s3, bucket)
            for note in dict.fromkeys(notes):
                print(f"note: {note}")
            if lacks:
                status = 1
                print(f"{bucket}: missing " + "; ".join(lacks)
                      + ("" if args.command == "create" else f" (fix: {Path(__file__).name} create {bucket})"))
            else:
                print(f"{bucket}: ok (versioning, lifecycle, public access, encryption)")
        return status
    except Failure as err:
        print(f"buckets.py: error: {err}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as err:
        print(f"buckets.py: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""infra/storage/buckets.py against the session's real S3 endpoint (moto_server on loopback): run
as the user runs it, then read back through boto3 what it set; `check` names what a bare bucket
lacks; the IAM policy grants nothing beyond the bucket's prefix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "storage" / "buckets.py"
# What a job needs on S3 (pyarrow/Ray Train checkpoints, run records, the run lock), independent
# of the script's own list.
NEEDED = {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
          "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env=env or dict(os.environ))


def test_create_is_idempotent_and_reads_back(s3_endpoint):
    s3 = boto3.client("s3")
    first = run("create", "infra-runs", "infra-artifacts", "--noncurrent-days", "14")
    assert first.returncode == 0, first.stderr
    assert "infra-runs: created" in first.stdout and "infra-artifacts: ok" in first.stdout
    again = run("create", "infra-runs", "--noncurrent-days", "14")
    assert again.returncode == 0 and "infra-runs: exists" in again.stdout, again.stdout + again.stderr
    for bucket in ("infra-runs", "infra-artifacts"):
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert len(rules) == 2, rules  # a second create replaced the rules, it did not add to them
        assert {r["Status"] for r in rules} == {"Enabled"}
        noncurrent = [r for r in rules if "NoncurrentVersionExpiration" in r]
        assert noncurrent[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 14
        assert not any("Days" in r.get("Expiration", {}) for r in rules), "current objects must never expire by age"
        assert [r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] for r in rules
                if "AbortIncompleteMultipartUpload" in r] == [7]
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
    # versioning is live: an overwritten run record keeps its previous version
    s3.put_object(Bucket="infra-runs", Key="xdlm/r/xdlm_run.json", Body=b"1")
    s3.put_object(Bucket="infra-runs", Key="xdlm/r/xdlm_run.json", Body=b"2")
    versions = s3.list_object_versions(Bucket="infra-runs", Prefix="xdlm/r/")["Versions"]
    assert len(versions) == 2
    checked = run("check", "infra-runs", "infra-artifacts")
    assert checked.returncode == 0 and checked.stdout.count(": ok") == 2, checked.stdout


def test_check_names_what_a_bare_bucket_lacks(s3_endpoint):
    boto3.client("s3").create_bucket(Bucket="infra-bare")
    out = run("check", "infra-bare", "infra-never-created")
    assert out.returncode == 1, out.stdout + out.stderr
    bare = next(line for line in out.stdout.splitlines() if line.startswith("infra-bare:"))
    for what in ("versioning", "expiring noncurrent versions", "aborting incomplete multipart uploads",
                 "public access block"):
        assert what in bare, bare
    assert "infra-never-created: missing the bucket itself" in out.stdout


def test_usage_and_access_errors_are_one_line(s3_endpoint, tmp_path):
    bad = run("create", "infra-x", "--noncurrent-days", "0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--noncurrent-days" in bad.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    nocreds = run("--endpoint-url", s3_endpoint["url"], "check", "infra-runs", env=env)
    assert nocreds.returncode == 2 and "Traceback" not in nocreds.stderr, nocreds.stderr
    assert "credentials" in nocreds.stderr.lower()


def _statements(policy: dict) -> list[dict]:
    out = []
    for st in policy["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        out.append({**st, "Action": actions, "Resource": resources})
    return out


@pytest.mark.parametrize("source", ["example", "generated"])
def test_policy_grants_only_the_bucket_prefix(source):
    if source == "example":
        policy = json.loads((ROOT / "infra" / "storage" / "policy.example.json").read_text())
    else:
        out = run("policy", "team-xdlm-runs", "--prefix", "xdlm/")
        assert out.returncode == 0, out.stderr
        policy = json.loads(out.stdout)
    statements = _statements(policy)
    actions = {a for st in statements for a in st["Action"]}
    assert actions == NEEDED, actions ^ NEEDED
    for st in statements:
        assert st["Effect"] == "Allow" and "Principal" not in st and "NotAction" not in st
        for r in st["Resource"]:
            if any(a in st["Action"] for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")):
                assert r == "arn:aws:s3:::team-xdlm-runs/xdlm/*", r
            else:
                assert r == "arn:aws:s3:::team-xdlm-runs", r
    if source == "generated":  # the example is what the script prints: they cannot drift apart
        assert policy == json.loads((ROOT / "infra" / "storage" / "policy.example.json").read_text())


def test_policy_check_rejects_a_broader_policy():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import buckets
    finally:
        sys.path.remove(str(SCRIPT.parent))
    good = buckets.job_policy(["team-xdlm-runs"], "xdlm/")
    assert buckets.policy_problems(good, ["team-xdlm-runs"]) == []
    wide = json.loads(json.dumps(good))
    wide["Statement"][1]["Action"].append("s3:DeleteObjectVersion")
    wide["Statement"][1]["Resource"].append("arn:aws:s3:::other-bucket/*")
    problems = buckets.policy_problems(wide, ["team-xdlm-runs"])
    assert any("DeleteObjectVersion" in p for p in problems) and any("other-bucket" in p for p in problems)

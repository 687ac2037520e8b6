"""infra/kuberay: the RayCluster and RayJob manifests run xdlm on GPU worker groups with token
auth from a Secret, a head nobody outside the namespace reaches, bounded retries and lifetime, and
logs shipped off the pods; the RayJob's entrypoint resumes or starts the sweep it names, through
the same shell quoting KubeRay's submitter applies."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "infra" / "kuberay"
SECRET_NAMES = {"xdlm-ray-token", "xdlm-mlflow-client", "xdlm-aws"}
CREDENTIAL_ENV = ("RAY_AUTH_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                  "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME", "PGPASSWORD")


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def pod_templates(spec: dict) -> list[tuple[str, dict]]:
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    return [(name, g["template"]["spec"]) for name, g in groups]


@pytest.fixture(scope="module", params=["raycluster.yaml", "rayjob.yaml"])
def manifest(request) -> dict:
    (doc,) = load(request.param)
    return doc


def walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")
    yield path, node


def test_kinds_versions_and_the_clients_ray(manifest):
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] in ("RayCluster", "RayJob")
    # the Jobs API client (xdlm submit, this venv) and the cluster run the same Ray
    assert cluster_spec(manifest)["rayVersion"] == ray.__version__
    docker = (KUBERAY / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-" in docker and "pip install" in docker
    images = {c["image"] for _, pod in pod_templates(cluster_spec(manifest)) for c in pod["containers"]
              if c["name"].startswith("ray-")}
    assert len(images) == 1


def test_gpu_worker_groups_and_a_head_without_training(manifest):
    spec = cluster_spec(manifest)
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        ray_container = group["template"]["spec"]["containers"][0]
        gpus = int(ray_container["resources"]["limits"]["nvidia.com/gpu"])
        assert gpus >= 1 and ray_container["resources"]["requests"]["nvidia.com/gpu"] == str(gpus), group["groupName"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]


def test_token_auth_from_the_secret_on_every_ray_container(manifest):
    spec = cluster_spec(manifest)
    assert spec["authOptions"] == {"mode": "token", "secretName": "xdlm-ray-token"}
    for name, pod in pod_templates(spec):
        ray_container = pod["containers"][0]  # KubeRay configures container 0 as the Ray node
        assert ray_container["name"].startswith("ray-"), name
        env = {e["name"]: e for e in ray_container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", name
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "xdlm-ray-token", "key": "auth_token"} and "value" not in env["RAY_AUTH_TOKEN"], name
        # MLflow and S3 settings: ConfigMap for settings, Secrets for credentials
        refs = [(k, v["name"]) for s in ray_container["envFrom"] for k, v in s.items()]
        assert ("configMapRef", "xdlm-settings") in refs and ("secretRef", "xdlm-mlflow-client") in refs, refs


def test_no_secret_is_inlined_anywhere():
    docs = [d for f in ("config.yaml", "raycluster.yaml", "rayjob.yaml") for d in load(f)]
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created with kubectl, never stored"
    for doc in docs:
        for path, node in walk(doc):
            if isinstance(node, dict) and node.get("name") in CREDENTIAL_ENV and "value" in node:
                pytest.fail(f"{doc['kind']} {path}: {node['name']} has an inline value")
    settings = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "xdlm-settings")
    assert not set(settings["data"]) & set(CREDENTIAL_ENV)
    assert settings["data"]["MLFLOW_TRACKING_URI"].startswith(("http://", "https://"))
    assert "@" not in settings["data"]["MLFLOW_TRACKING_URI"], "a password in the tracking URI"


def test_the_head_is_not_exposed(manifest):
    spec = cluster_spec(manifest)
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    assert "headService" not in spec["headGroupSpec"]
    everything = [d for f in ("config.yaml", "raycluster.yaml", "rayjob.yaml") for d in load(f)]
    assert not [d for d in everything if d["kind"] in ("Ingress", "Service", "Gateway", "HTTPRoute")]
    for name, pod in pod_templates(spec):
        assert not pod.get("hostNetwork"), name
        assert not any("hostPort" in p for c in pod["containers"] for p in c.get("ports", [])), name
    (policy,) = [d for d in everything if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/node-type": "head"}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for rule in policy["spec"]["ingress"]:
        assert rule["from"], "a rule without sources admits everyone"
        assert not any("ipBlock" in peer for peer in rule["from"])


def test_logs_are_shipped_off_every_pod(manifest):
    spec = cluster_spec(manifest)
    (config,) = [d for d in load("config.yaml") if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "xdlm-fluent-bit"]
    conf = config["data"]["fluent-bit.conf"]
    assert "Path              /tmp/ray/session_latest/logs/*" in conf
    assert "Name              s3" in conf and "${XDLM_LOG_BUCKET}" in conf
    for name, pod in pod_templates(spec):
        ray_mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        shipper = [c for c in pod["containers"] if c["name"] == "fluent-bit"]
        assert len(shipper) == 1, name
        ship_mounts = {m["name"]: m["mountPath"] for m in shipper[0]["volumeMounts"]}
        # the same volume at the same path: session_latest is an absolute symlink into it
        assert ray_mounts["ray-logs"] == ship_mounts["ray-logs"] == "/tmp/ray", name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["fluent-bit-config"]["configMap"]["name"] == "xdlm-fluent-bit"
        assert ship_mounts["fluent-bit-config"] == "/fluent-bit/etc/"


def test_rayjob_bounds_retries_and_lifetime():
    (job,) = load("rayjob.yaml")
    spec = job["spec"]
    assert 1 <= spec["backoffLimit"] <= 5
    assert 3600 <= spec["activeDeadlineSeconds"] <= 7 * 24 * 3600
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["metadata"] == {"xdlm.kind": "sweep", "xdlm.name": "quick_k_gpu"}


def run_entrypoint(entrypoint: str, tmp_path: Path, storage: Path) -> list[str]:
    """Run the RayJob's entrypoint as KubeRay and Ray do: KubeRay splices it into its submitter's
    shell line, `ray job submit -- ...` re-joins the words with shlex.join, and the job supervisor
    runs that with sh -c on the head. A stub `xdlm` records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv"
    stub = bin_dir / "xdlm"
    stub.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {shlex.quote(str(record))}\n')
    stub.chmod(0o755)
    # the image's checkout (/home/ray/xdlm) is where the entrypoint cds; here, a stand-in
    checkout = tmp_path / "checkout"
    checkout.mkdir(exist_ok=True)
    entrypoint = entrypoint.replace("cd /home/ray/xdlm", f"cd {checkout}")
    # stands in for `ray job submit --address ... -- ENTRYPOINT ;`: the words after `--` as the
    # submitter's shell splits them, re-joined the way the Ray CLI does (shlex.join)
    words = subprocess.run(["bash", "-c", f'printf "%s\\0" {entrypoint} ;'], capture_output=True, text=True,
                           check=True).stdout.split("\0")[:-1]
    joined = shlex.join(words)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "XDLM_SWEEP_STORAGE": str(storage)}
    subprocess.run(["sh", "-c", joined], env=env, check=True, timeout=30)
    return record.read_text().splitlines()


def test_rayjob_entrypoint_starts_then_resumes_a_valid_sweep(tmp_path):
    from xdlm.tune.sweep import load_sweep

    (job,) = load("rayjob.yaml")
    storage = tmp_path / "shared" / "runs"
    first = run_entrypoint(job["spec"]["entrypoint"], tmp_path, storage)
    assert first[:2] == ["sweep", "sweeps/quick_k.yaml"], first
    overrides = first[2:]
    assert f"storage_path={storage}" in overrides and "resources.use_gpu=true" in overrides
    # what the cluster will run validates here (the same checks `xdlm sweep` runs before Ray)
    sweep = load_sweep(ROOT / first[1], overrides)
    assert sweep.spec.name == "quick_k_gpu" and sweep.job.cluster.use_gpu is True
    # a retry (a new cluster, the same shared volume) continues the sweep instead of refusing it
    (storage / "sweeps" / "quick_k_gpu").mkdir(parents=True)
    again = run_entrypoint(job["spec"]["entrypoint"], tmp_path, storage)
    assert again == ["sweep", "--resume", "quick_k_gpu", "--storage", str(storage)]

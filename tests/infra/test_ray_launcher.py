"""infra/ray/cluster.yaml: valid for the Ray that ships here (its own JSON schema and the checks
`ray up` runs before it contacts AWS), and safe: GPU groups that declare their GPUs, a head that
trains nothing, token auth on every node, a dashboard on loopback only."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "infra" / "ray" / "cluster.yaml"
# GPUs per instance type, from AWS's instance type pages (independent of the config under test).
AWS_GPUS = {"p4d.24xlarge": 8, "p4de.24xlarge": 8, "p5.48xlarge": 8, "p5e.48xlarge": 8,
            "g5.xlarge": 1, "g5.12xlarge": 4, "g5.48xlarge": 8, "g6.xlarge": 1, "g6.12xlarge": 4,
            "g6.48xlarge": 8, "g6e.12xlarge": 4}
AWS_VCPUS = {"p4d.24xlarge": 96, "p5.48xlarge": 192, "g5.12xlarge": 48, "g6.12xlarge": 48}


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    path = Path(os.path.dirname(ray.__file__)) / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def test_valid_against_the_schema_shipped_with_ray(config, schema):
    jsonschema.validate(config, schema)
    # a typo'd key or a fractional GPU count is caught by the same schema: the check can fail
    for broken in ({**config, "worker_start_ray_command": []},
                   {**config, "available_node_types": {**config["available_node_types"],
                                                       "gpu_4x_l4": {**config["available_node_types"]["gpu_4x_l4"],
                                                                     "resources": {"GPU": 0.5}}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_passes_the_checks_ray_up_runs_before_contacting_aws(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_gpu_worker_groups_declare_their_instances_gpus(config):
    types = config["available_node_types"]
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu_groups = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) > 0}
    assert len(gpu_groups) >= 2, f"expected a big and a small GPU group, got {sorted(gpu_groups)}"
    kinds = {t["node_config"]["InstanceType"].split(".")[0] for t in gpu_groups.values()}
    assert kinds & {"p4d", "p4de", "p5", "p5e"} and kinds & {"g5", "g6", "g6e"}, kinds
    for name, t in gpu_groups.items():
        itype = t["node_config"]["InstanceType"]
        assert t["resources"]["GPU"] == AWS_GPUS[itype], (name, itype)
        assert t["resources"]["CPU"] <= AWS_VCPUS[itype], (name, itype)
        assert 0 <= t.get("min_workers", 0) <= t["max_workers"] <= config["max_workers"], name


def test_head_trains_nothing(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["node_config"]["InstanceType"] not in AWS_GPUS


def _ray_start_lines(config) -> list[str]:
    lines = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config[key]]
    starts = [c for c in lines if re.search(r"\bray start\b", c)]
    assert len(starts) == 2, starts
    return starts


def test_every_node_starts_ray_with_token_auth_and_a_loopback_dashboard(config):
    head, worker = _ray_start_lines(config)
    for line in (head, worker):
        assert re.search(r"\bRAY_AUTH_MODE=token\b", line), line
    assert "--head" in head and "--dashboard-host=127.0.0.1" in head
    text = CONFIG.read_text()
    assert "0.0.0.0" not in text and "RAY_AUTH_MODE=disabled" not in text
    # the token reaches nodes as a file over SSH; it is never written into the config itself
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    assert "RAY_AUTH_TOKEN=" not in text


def test_every_node_installs_xdlm_from_the_synced_checkout(config):
    synced = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert synced == ["/home/ubuntu/xdlm"]
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    assert any(re.search(r"pip install (-q )?-e ~/xdlm\b", c) for c in installs), installs
    assert not any("constraints-cpu" in c for c in installs), "the CPU-only pins would replace CUDA torch"


def test_node_commands_are_valid_shell(config):
    import subprocess

    keys = ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    script = "\n".join(c for key in keys for c in config[key])
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

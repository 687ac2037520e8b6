"""DeepSpeed ZeRO-2 and ZeRO-3 inside Ray Train workers (gloo, CPU): a run of N steps equals a run
interrupted at N/2 and resumed, bit for bit (weights, EMA, optimizer shards, data positions), and
the full weights in ``state.pt`` are what DeepSpeed's own ``zero_to_fp32`` rebuilds from the
shards; plus the ``train.deepspeed`` checks, which need no Ray."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.train.conftest import without_clock
from xdlm.checkpoint import latest_checkpoint, load_model_from_run, read_checkpoint
from xdlm.config import ConfigError
from xdlm.train.engine import DEEPSPEED_TAG

# ZeRO-3 with the optimizer offloaded to the CPU; torch's AdamW steps the offloaded partitions
# (DeepSpeed's CPU Adam would JIT-build a C++ op first: ~2 min on 2 busy cores)
ZERO = {
    2: "train.deepspeed={zero_optimization: {stage: 2}}",
    3: "train.deepspeed={zero_optimization: {stage: 3, offload_optimizer: {device: cpu}}, "
       "zero_force_ds_cpu_optimizer: false}",
}


@pytest.mark.parametrize(("overrides", "field", "allowed"), [
    (["train.deepspeed={zero_optimization: {stage: 4}}"], "zero_optimization.stage", "0, 1, 2, 3"),
    (["train.deepspeed={zero_optimization: {stage: 2, offload_optimizer: {device: nvme}}}"],
     "offload_optimizer.device", "none, cpu"),
    (["train.deepspeed={zero_optimization: {stage: 0, offload_optimizer: {device: cpu}}}"],
     "offload_optimizer", "stage of 1, 2 or 3"),
    (["train.deepspeed={zero_optimization: {stage: 2, offload_param: {device: cpu}}}"], "offload_param", "stage 3"),
    (["train.deepspeed={zero_optimization: {stage: 2}, bf16: {enabled: true}}"], "bf16.enabled",
     "train.precision: bf16"),
    (["train.deepspeed={zero_optimization: {stage: 2}, fp16: {enabled: true}}"], "fp16.enabled", "bf16"),
    (["train.deepspeed={zero_optimization: {stage: 2}, optimizer: {type: Adam}}"], "train.deepspeed.optimizer",
     "optim"),
    (["train.deepspeed={zero_optimization: {stage: 2}, gradient_clipping: 0.5}"], "gradient_clipping",
     "optim.grad_clip = 1.0"),
    (["train.deepspeed={zero_optimization: {stage: 2}, train_micro_batch_size_per_gpu: 4}"],
     "train_micro_batch_size_per_gpu", "train.micro_batch = 2"),
    (["train.deepspeed={zero_optimization: {stage: 2}, gradient_accumulation_steps: 1}"],
     "gradient_accumulation_steps", "= 2"),
])
def test_deepspeed_config_errors_name_the_field(small_job, overrides, field, allowed):
    with pytest.raises(ConfigError) as err:
        small_job(*overrides)
    assert f"train.deepspeed.{field}" in str(err.value) or field in str(err.value)
    assert allowed in str(err.value)


def test_deepspeed_config_that_agrees_with_the_job_is_accepted(small_job):
    job = small_job("train.precision=bf16", "train.deepspeed={zero_optimization: {stage: 3, offload_optimizer: "
                    "{device: cpu}, offload_param: {device: none}}, bf16: {enabled: true}, gradient_clipping: 1.0, "
                    "train_batch_size: 8, gradient_accumulation_steps: 2}")
    assert (job.train.zero_stage(), job.train.offload("optimizer"), job.train.offload("param")) == (3, "cpu", "none")


def tensors_equal(a, b, where: str = "") -> None:
    """Every tensor in two nested checkpoint structures is equal, bit for bit."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            tensors_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            tensors_equal(x, y, f"{where}[{i}]")


def step_of(directory: Path) -> int:
    return read_checkpoint(directory)["counters"]["step"]


def interrupted_copy(run_dir: str, name: str, at_step: int) -> Path:
    """The run as a crash right after its step-``at_step`` checkpoint would have left it."""
    copy = Path(run_dir).parent / name
    shutil.copytree(run_dir, copy)
    for directory in (p for p in copy.glob("checkpoint_*") if p.is_dir()):
        if step_of(directory) > at_step:
            shutil.rmtree(directory)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_resume_is_bit_exact_and_exports_full_weights(ray_session, small_job, stage):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from xdlm.train.launch import run_training

    common = (ZERO[stage], "train.steps=4", "train.checkpoint_every=2", "train.eval_every=2")
    straight = run_training(small_job(*common, name=f"zero{stage}"), tracking=False)
    checkpoints = [p for p in Path(straight.run_dir).glob("checkpoint_*") if p.is_dir()]
    assert sorted(step_of(c) for c in checkpoints) == [2, 4]
    interrupted_copy(straight.run_dir, f"zero{stage}-resumed", at_step=2)
    resumed = run_training(small_job(*common, name=f"zero{stage}-resumed"), resume=True, tracking=False)

    a_dir, b_dir = latest_checkpoint(straight.run_dir), latest_checkpoint(resumed.run_dir)
    a, b = read_checkpoint(a_dir), read_checkpoint(b_dir)
    assert without_clock(a["counters"]) == without_clock(b["counters"]) and a["counters"]["step"] == 4
    assert a["data"] == b["data"] and len(a["data"]) == 2
    tensors_equal(a["model"], b["model"], "model")
    tensors_equal(a["ema"], b["ema"], "ema")
    shards = sorted(p.name for p in (a_dir / DEEPSPEED_TAG).iterdir())
    assert shards == sorted(p.name for p in (b_dir / DEEPSPEED_TAG).iterdir())
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= set(shards)
    # ZeRO-3 partitions the weights too: each rank writes its own model-states file
    assert ("zero_pp_rank_1_mp_rank_00_model_states.pt" in shards) == (stage == 3)
    for name in (n for n in shards if n.endswith("optim_states.pt")):
        x = torch.load(a_dir / DEEPSPEED_TAG / name, map_location="cpu", weights_only=False)
        y = torch.load(b_dir / DEEPSPEED_TAG / name, map_location="cpu", weights_only=False)
        tensors_equal(x["optimizer_state_dict"], y["optimizer_state_dict"], name)

    # the full weights in state.pt (gathered from the partitions under ZeRO-3) are DeepSpeed's own
    # fp32 reconstruction from the optimizer shards, and they are full-size, finite, trained
    rebuilt = get_fp32_state_dict_from_zero_checkpoint(str(a_dir), tag=DEEPSPEED_TAG)
    assert set(rebuilt) == set(a["model"])
    for key, value in rebuilt.items():
        assert torch.equal(value, a["model"][key]), key
    assert a["model"]["output_head.weight"].abs().sum() > 0  # zero at init: it trained
    model, _ = load_model_from_run(straight.run_dir)  # what xdlm eval / sample load (EMA weights)
    for p, s in zip(model.parameters(), a["ema"]["shadow"], strict=True):
        assert p.shape == s.shape and torch.equal(p.detach(), s)

"""The paper's 8B jobs validate offline (no download: the architecture is declared in
``model.hf.config``) and say what the paper's recipe says; the MDLM control differs only in k."""

from __future__ import annotations

from pathlib import Path

import pytest

from xdlm.cli import main
from xdlm.config import load_job, to_dict

JOBS = Path(__file__).resolve().parents[2] / "jobs"
LLADA_8B = {"model_type": "llada", "n_layers": 32, "d_model": 4096, "n_heads": 32, "mlp_hidden_size": 12288,
            "vocab_size": 126464, "mask_token_id": 126336, "weight_tying": False}


@pytest.mark.parametrize("name,k", [("llada8b_xdlm", 0.1), ("llada8b_mdlm", 0.0)])
def test_8b_jobs_validate_offline_with_the_papers_recipe(name, k, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    job = load_job(JOBS / f"{name}.yaml")
    hf = job.model.hf
    assert (job.model.backbone, hf.pretrained, hf.trust_remote_code, dict(hf.config)) == \
        ("hf", "GSAI-ML/LLaDA-8B-Base", True, LLADA_8B)
    assert (job.data.source, job.data.tokenizer, job.data.hf_tokenizer, job.data.seq_len) == \
        ("fineweb-edu", "hf", "GSAI-ML/LLaDA-8B-Base", 4096)
    assert (job.diffusion.k, job.optim.lr, job.optim.warmup_steps, job.optim.lr_schedule,
            job.optim.weight_decay) == (k, 2e-5, 100, "constant", 0.1)
    assert (job.train.zero_stage(), job.train.precision, job.train.steps, hf.dtype) == (2, "bf16", 1000, "bfloat16")
    assert (job.cluster.num_workers, job.cluster.use_gpu, job.eval.sampler) == (8, True, "llada")
    assert main(["config", str(JOBS / f"{name}.yaml")]) == 0  # the CLI's validation path
    assert "pretrained: GSAI-ML/LLaDA-8B-Base" in capsys.readouterr().out


def test_mdlm_control_differs_from_the_xdlm_job_only_in_name_and_k():
    xdlm, mdlm = (to_dict(load_job(JOBS / f"{n}.yaml")) for n in ("llada8b_xdlm", "llada8b_mdlm"))
    for job in (xdlm, mdlm):
        job.pop("name")
        job["diffusion"].pop("k")
    assert xdlm == mdlm


def test_tiny_job_is_the_same_path_at_toy_scale():
    job = load_job(JOBS / "tiny_hf_xdlm.yaml")
    assert (job.model.backbone, job.model.hf.config["model_type"], job.diffusion.k) == ("hf", "llama", 0.1)
    assert (job.optim.lr_schedule, job.optim.weight_decay, job.train.zero_stage()) == ("constant", 0.1, 2)
    assert (job.cluster.num_workers, job.cluster.use_gpu, job.eval.sampler) == (2, False, "llada")
    assert "vocab_size" not in job.model.hf.config  # the local tokenizer's, [MASK] included


def test_8b_job_prints_its_memory_plan_offline_and_a_gpu_too_small_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    job = str(JOBS / "llada8b_xdlm.yaml")
    assert main(["config", job, "--plan"]) == 0
    out = capsys.readouterr().out
    # 32 x (4 h^2 + 3 h f + 2 h) + h + 2 V h with h = 4096, f = 12288, V = 126464 (no tying)
    assert "8.016 B parameters, 8 workers, micro-batch 1 x 4096 tokens, bf16 weights, 80 GiB per GPU" in out
    mine = next(line for line in out.splitlines() if line.lstrip().startswith("->"))
    assert mine.split()[1:3] == ["ZeRO-2", "14.93"] and mine.split()[-1] == "fits"  # bf16 weights: 2 bytes/param
    assert main(["config", job, "cluster.gpu_memory_gb=24", "--plan"]) == 2
    err = capsys.readouterr().err
    assert "cluster.gpu_memory_gb: the job needs 29.6 GiB per GPU with ZeRO-2" in err and "ZeRO-3" in err

"""The memory plan against hand counts (a 2-layer DiT), against a model built on the meta device,
and against the ZeRO paper's own figures (Rajbhandari et al. 2020, Figure 1: a 7.5 B model on 64
GPUs with mixed-precision Adam, K = 12); the refusal names the numbers and what would fit."""

from __future__ import annotations

import pytest
import torch

from xdlm.config import ConfigError
from xdlm.models import build_model, count_parameters
from xdlm.train.memory_plan import Architecture, Setting, activation_bytes, check_plan, plan, row
from xdlm.train.preflight import check_memory

GB = 1e9


def tiny_arch(small_job) -> tuple[Architecture, int]:
    job = small_job()
    with torch.device("meta"):
        arch = Architecture.of_module(build_model(job.model, 512), dropout=True)
    return arch, count_parameters(build_model(job.model, 512))["total"]  # counted on real CPU tensors


def test_architecture_of_a_meta_module_matches_the_built_model(small_job):
    arch, real = tiny_arch(small_job)
    assert arch.params == real == 204_160
    assert (arch.n_layers, arch.hidden, arch.mlp, arch.vocab, arch.gated_mlp) == (2, 64, 256, 512, False)


def test_llama_like_description_matches_a_meta_built_llama():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=300)
    with torch.device("meta"):
        net = transformers.LlamaForCausalLM(config)
    described = Architecture.llama_like(3, 64, 176, 300, kv_hidden=32)
    assert Architecture.of_module(net) == described
    # the 8B of the paper's recipe (LLaDA-8B: 32 layers, d 4096, MLP 12288, vocabulary 126464)
    assert Architecture.llama_like(32, 4096, 12288, 126464).params == 8_015_581_184


def test_states_and_activations_match_hand_counts(small_job):
    arch, _ = tiny_arch(small_job)
    p = 204_160
    fp32 = Setting(workers=2, micro_batch=2, seq_len=32, bf16_weights=False, bf16_activations=False, ema=True)
    # a layer: T = 64 tokens x (4 bytes x (8 x 64 + 2 x 256) + 2 x 64 dropout bytes) = 270,336
    layer = 64 * (4 * (8 * 64 + 2 * 256) + 2 * 64)
    head = 3 * 64 * 512 * 4
    assert activation_bytes(arch, fp32, checkpointing=False) == 2 * layer + head == 933_888
    assert activation_bytes(arch, fp32, checkpointing=True) == 2 * 64 * 4 * 64 + layer + head
    rows = {(r.stage, r.offload_optimizer, r.offload_param): r for r in plan(arch, fp32)}
    expected = {0: (4 * p, 4 * p, 8 * p, 4 * p), 1: (4 * p, 4 * p, 4 * p, 4 * p),
                2: (4 * p, 2 * p, 4 * p, 4 * p), 3: (2 * p, 2 * p, 4 * p, 2 * p)}
    for stage, (params, grads, optimizer, ema) in expected.items():
        r = rows[(stage, False, False)]
        assert (r.params, r.grads, r.optimizer, r.ema, r.host) == (params, grads, optimizer, ema, 0)
        assert r.total == params + grads + optimizer + ema + 2 * layer + head
    offloaded = rows[(3, True, True)]
    assert (offloaded.params, offloaded.optimizer, offloaded.host) == (0, 0, 2 * p + 4 * p)


def test_zero_paper_figures_for_7_5b_on_64_gpus():
    """Figure 1 of the ZeRO paper: 120 GB (baseline), 31.4 GB (P_os), 16.6 GB (P_os+g), 1.9 GB
    (P_os+g+p) of model states per GPU: 16 bytes per parameter, partitioned stage by stage."""
    arch = Architecture(params=7_500_000_000, n_layers=1, hidden=1, mlp=1, vocab=1)
    mixed = Setting(workers=64, micro_batch=1, seq_len=1, bf16_weights=True, bf16_activations=True, ema=False)
    states = [round((r.total - r.activations) / GB, 1) for r in (row(arch, mixed, s) for s in range(4))]
    assert states == [120.0, 31.4, 16.6, 1.9]


def test_8b_recipe_numbers():
    """An 8B model in bf16: ~16 GB of weights; mixed-precision AdamW 16 bytes/param (~128 GB)
    on one GPU; ZeRO-3 over 8 GPUs divides weights, gradients and optimizer by 8."""
    arch = Architecture.llama_like(32, 4096, 12288, 126464)
    setting = Setting(workers=8, micro_batch=1, seq_len=4096, bf16_weights=True, bf16_activations=True,
                      ema=False, checkpointing=True, fused_head=True)
    zero0, zero3 = row(arch, setting, 0), row(arch, setting, 3)
    assert zero0.params / GB == pytest.approx(16.03, abs=0.01)
    assert (zero0.params + zero0.grads + zero0.optimizer) == 16 * arch.params
    assert (zero3.params + zero3.grads + zero3.optimizer) == 16 * arch.params / 8
    # with checkpointing: 32 layer inputs + one layer of 4096 tokens in bf16
    assert zero3.activations == 32 * 4096 * 2 * 4096 + 4096 * 2 * (8 * 4096 + 4 * 12288)


def test_refusal_names_the_numbers_and_the_remedies(small_job, capsys):
    ok = small_job("train.deepspeed={zero_optimization: {stage: 2}}", "cluster.gpu_memory_gb=1")
    check_memory(ok)
    printed = capsys.readouterr().out
    assert "memory plan per GPU" in printed and "-> ZeRO-2" in printed and "ZeRO-3 + offload optimizer" in printed
    # 2.5 MiB holds ZeRO-3 with both offloads (1.7 MiB), not the job's ZeRO-2 (3.6 MiB)
    tight = small_job("train.deepspeed={zero_optimization: {stage: 2}}", "cluster.gpu_memory_gb=0.0025")
    with pytest.raises(ConfigError) as err:
        check_plan(tight, echo=lambda text: None)
    message = str(err.value)
    assert message.startswith("cluster.gpu_memory_gb: the job needs") and "with ZeRO-2" in message
    assert "but a GPU has 0.0025 GiB" in message and "ZeRO-3 + offload optimizer+param" in message
    assert "train.micro_batch=1 would need" in message
    silent = small_job()  # DDP without a GPU size: nothing printed
    check_memory(silent)
    assert capsys.readouterr().out == ""

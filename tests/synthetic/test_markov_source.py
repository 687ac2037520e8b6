"""The Markov source in the data layer and the config: Datasets API, resume, refusals."""

from __future__ import annotations

import pytest
import torch

from xdlm.config import ConfigError, load_job
from xdlm.data import DataConfig, build_datasets
from xdlm.errors import UserError
from xdlm.models import build_model
from xdlm.objective import build_denoiser, build_process
from xdlm.train.preflight import check_trainable

MARKOV = ["data.source=markov", "data.eval_sets=[]", "data.seq_len=16", "data.markov.validation_sequences=32"]


def test_datasets_api_and_bit_identical_rebuild() -> None:
    cfg = DataConfig(source="markov", eval_sets=[], seq_len=16)
    cfg.markov.validation_sequences = 32
    a, b = build_datasets(cfg), build_datasets(cfg)
    tok = a.tokenizer
    assert (tok.vocab_size, tok.mask_id) == (9, 8)
    assert tok.decode([0, 1, 8]) == "ab_" and tok.encode("ab_") == [0, 1, 8]
    assert torch.equal(next(iter(a.eval_batches(32))), next(iter(b.eval_batches(32))))
    assert a.exact_law is not None and a.unigram_baseline().perplexity > 1
    assert a.summary()["markov"]["entropy_rate"] == pytest.approx(a.exact_law.entropy_rate())
    stream = a.train_batches(4, rank=0, world_size=2)
    first = [next(stream) for _ in range(3)]
    resumed = b.train_batches(4, rank=0, world_size=2)
    resumed.load_state_dict(a.train_batches(4, rank=0, world_size=2).state_dict())
    assert torch.equal(next(resumed), first[0])
    resumed.load_state_dict(stream.state_dict())
    assert torch.equal(next(resumed), next(stream))
    assert not torch.equal(next(a.train_batches(4, rank=1, world_size=2)), first[0])


@pytest.mark.parametrize("override, field", [
    ("data.markov.num_symbols=1", "markov.num_symbols"), ("data.markov.order=4", "markov.order"),
    ("data.markov.num_symbols=300", "markov.max_memory_mb"), ("data.eval_sets=[stdlib-test]", "eval_sets"),
])
def test_bad_markov_configs_name_the_field(override: str, field: str) -> None:
    overrides = MARKOV + ["data.markov.order=3", override] if "300" in override else MARKOV + [override]
    with pytest.raises(ConfigError, match=field) as err:
        load_job(None, overrides)
    if "300" in override:
        assert "MiB" in str(err.value)  # the number it would need


def test_the_oracle_is_refused_on_text_and_for_training() -> None:
    with pytest.raises(ConfigError, match="model.backbone"):
        load_job(None, ["model.backbone=oracle"])
    job = load_job(None, MARKOV + ["model.backbone=oracle"])
    with pytest.raises(UserError, match="model.backbone: 'oracle' has no trainable parameters"):
        check_trainable(job)
    with pytest.raises(ValueError, match="build_denoiser"):
        build_model(job.model, 9)


def test_build_denoiser_gives_the_oracle_its_source() -> None:
    job = load_job(None, MARKOV + ["model.backbone=oracle", "diffusion.k=0.5"])
    data = build_datasets(job.data)
    process = build_process(job, data.tokenizer.vocab_size, data.tokenizer.mask_id)
    oracle = build_denoiser(job, data, process)
    z = process.xdlm.sample_prior((3, 16))
    logits = oracle(z, torch.full((3,), 0.7))
    assert logits.shape == (3, 16, 9) and bool(torch.isinf(logits[..., 8]).all())
    assert torch.allclose(logits[..., :8].exp().sum(-1), torch.ones(3, 16, dtype=torch.float64))
    assert sum(p.numel() for p in oracle.parameters()) == 0


def test_a_prefix_outside_the_sources_symbols_is_a_user_error() -> None:
    """`xdlm sample --prefix` on a Markov run: symbols of the source encode (no BOS: sample_run
    then starts the fixed prefix at position 0); anything else is refused naming the flag."""
    cfg = DataConfig(source="markov", eval_sets=[], seq_len=16)
    cfg.markov.validation_sequences = 32
    tok = build_datasets(cfg).tokenizer
    assert tok.bos_id is None and tok.encode_batch(["abc"]) == [[0, 1, 2]]
    with pytest.raises(UserError, match="--prefix: symbols must be in 0..7"):
        tok.encode("xyz")
    with pytest.raises(UserError, match="--prefix: not a sequence of symbols"):
        tok.encode("a!")

"""Job configs: YAML overrides typed defaults; every mistake names the field (no Ray involved)."""

from pathlib import Path

import pytest

from xdlm.config import ConfigError, JobConfig, load_job, to_yaml
from xdlm.config_reference import reference_markdown

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_job_validates(path):
    job = load_job(path)
    assert isinstance(job, JobConfig) and job.accum_steps >= 1


def test_yaml_and_overrides_layer_on_defaults(tmp_path):
    job = load_job(ROOT / "jobs/quickstart.yaml", ["diffusion.k=0.5", "train.steps=7"])
    assert job.diffusion.k == 0.5 and job.train.steps == 7
    assert job.model.size == "tiny" and job.optim.betas == [0.9, 0.999]  # defaults survive
    again = tmp_path / "resolved.yaml"
    again.write_text(to_yaml(job))
    assert load_job(again) == job  # the resolved YAML round-trips


@pytest.mark.parametrize("override,message", [
    ("model.sise=tiny", "unknown key 'model.sise'; allowed keys here: backbone, size"),
    ("bogus=1", "unknown key 'bogus'"),
    ("diffusion.k=1.5", r"diffusion.k: must be in \[0, 1\]"),
    ("diffusion.schedule=linear", "diffusion.schedule: unknown 'linear'; available: cosine, geometric, loglinear, polynomial"),
    ("diffusion.schedule_params={w: -1}", "diffusion.schedule_params"),
    ("diffusion.loss_backend=cuda", "diffusion.loss_backend: must be one of auto, torch, chunked, triton"),
    ("optim.lr=abc", "bad value for 'optim.lr'"),
    ("optim.lr_schedule=linear", "optim.lr_schedule: must be one of constant, cosine"),
    ("train.global_batch=33", "train.global_batch: must be a positive multiple of train.micro_batch x cluster.num_workers = 32"),
    ("train.precision=fp8", "train.precision: must be one of auto, fp32, bf16"),
    ("data.seq_len=4096", "data.seq_len: 4096 is above the model's maximum model.max_seq_len = 1024"),
    ("data.source=imagenet", "unknown"),
    ("data.tokenizer=llama", "available: bert-base-uncased, bpe, gpt2"),
    ("model.size=huge", "model"),
    ("eval.sampler=ddim", "eval.sampler: unknown 'ddim'; available: ancestral"),
    ("train.deepspeed={zero_optimization: {stage: 4}}", "train.deepspeed.zero_optimization.stage: must be one of 0, 1, 2, 3, got 4"),
    ("name=../escape", "name: must be letters"),
    ("cluster.num_workers=0", "cluster.num_workers: must be >= 1"),
    # non-finite numbers (issue 10: optim.lr=inf used to train to a FINISHED run with NaN weights)
    ("optim.lr=inf", "optim.lr: must be a finite number, got inf"),
    ("diffusion.k=nan", "diffusion.k: must be a finite number, got nan"),
    ("optim.betas=[0.9,.inf]", r"optim.betas\[1\]: must be a finite number"),
    ("diffusion.schedule_params={eps: .nan}", "diffusion.schedule_params.eps: must be a finite number"),
    # shapes that used to escape as tracebacks
    ("diffusion.schedule_params=[1,2]", "diffusion.schedule_params"),
    ("train.deepspeed={zero_optimization: 5}", "train.deepspeed.zero_optimization: must be a mapping"),
])
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_job(ROOT / "jobs/quickstart.yaml", [override])


def test_missing_job_file_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="job file not found"):
        load_job(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must look like dotted.key=value"):
        load_job(None, ["diffusion.k"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- train\n- steps\n")
    with pytest.raises(ConfigError, match="top level of a job file must be a mapping"):
        load_job(listed)


@pytest.mark.parametrize("section", ["diffusion", "optim", "train", "cluster", "tracking", "eval"])
def test_each_section_validates_itself(section):
    """A section's own validate() names its fields, without the rest of the job."""
    job = JobConfig()
    sub = getattr(job, section)
    assert sub.validate() is sub
    first_number = next(f for f in type(sub).__dataclass_fields__ if isinstance(getattr(sub, f), int | float)
                        and not isinstance(getattr(sub, f), bool))
    setattr(sub, first_number, -10**9)
    with pytest.raises(ConfigError, match=rf"^{section}\.{first_number}: "):
        sub.validate()


def test_configuration_reference_is_current():
    """docs/configuration.md is generated from the dataclasses: regenerate it when they change
    (`xdlm config --reference > docs/configuration.md`)."""
    assert (ROOT / "docs/configuration.md").read_text().strip() == reference_markdown().strip()

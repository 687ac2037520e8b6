"""Every metric name the platform writes, built in one place.

Training, ``xdlm eval``, the sweep's metric check and the sweep report all call these, so one
quantity has one name everywhere: a run evaluated again by ``xdlm eval`` lands on the same chart
as the numbers its training logged.

- ``val/nelbo``, ``val/ppl``: the held-out validation split of the training corpus;
- ``zeroshot/<set>/nelbo``, ``zeroshot/<set>/ppl``: another corpus (``data.eval_sets``);
- ``val/unigram_ppl``: the unigram baseline of the validation split (a floor for "learned
  something");
- ``gen/entropy_<S>steps``, ``gen/ppl_<S>steps``: generation quality with S sampler steps;
- ``train/*``: the optimisation itself.
"""

from __future__ import annotations

VALIDATION = "validation"
"""The data layer's name of the validation split of the training corpus."""

TRAIN_LOSS = "train/loss"
TRAIN_LR = "train/lr"
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_TOKENS_PER_S = "train/tokens_per_s"
UNIGRAM_PPL = "val/unigram_ppl"


EVALUATION_PREFIXES = ("val/", "zeroshot/", "gen/")
"""Every evaluation metric starts with one of these (the CLI prints those after a run)."""


def is_evaluation(name: str) -> bool:
    return name.startswith(EVALUATION_PREFIXES)


def _prefix(eval_set: str) -> str:
    return "val" if eval_set == VALIDATION else f"zeroshot/{eval_set}"


def nelbo(eval_set: str = VALIDATION) -> str:
    """Token-mean NELBO (nats) on ``eval_set``."""
    return f"{_prefix(eval_set)}/nelbo"


def ppl(eval_set: str = VALIDATION) -> str:
    """exp(NELBO) on ``eval_set``: an upper bound on the perplexity."""
    return f"{_prefix(eval_set)}/ppl"


def sample_entropy(steps: int) -> str:
    """Mean per-sample unigram entropy of samples drawn with ``steps`` sampler steps."""
    return f"gen/entropy_{int(steps)}steps"


def generative_ppl(steps: int) -> str:
    """Perplexity of samples drawn with ``steps`` sampler steps under the evaluator model."""
    return f"gen/ppl_{int(steps)}steps"


def during_training() -> tuple[str, ...]:
    """What every training worker reports (to MLflow and to Tune) at each evaluation."""
    return (nelbo(), ppl(), "step", "tokens")


def at_end(eval_sets: list[str], zero_shot: bool, generates: bool, sample_steps: list[int],
           has_evaluator: bool) -> list[str]:
    """What a finished training (or ``xdlm eval``) reports on top of ``during_training``."""
    names = [UNIGRAM_PPL]
    if zero_shot:
        for eval_set in eval_sets:
            names += [nelbo(eval_set), ppl(eval_set)]
    if generates:
        for steps in sample_steps:
            names.append(sample_entropy(steps))
            if has_evaluator:
                names.append(generative_ppl(steps))
    return names

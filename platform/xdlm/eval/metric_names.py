"""Every metric name the platform writes, built in one place.

Training, ``xdlm eval``, the sweep's metric check and the sweep report all call these, so one
quantity has one name everywhere: a run evaluated again by ``xdlm eval`` lands on the same chart
as the numbers its training logged.

- ``val/nelbo``, ``val/ppl``: the held-out validation split of the training corpus;
- ``zeroshot/<set>/nelbo``, ``zeroshot/<set>/ppl``: another corpus (``data.eval_sets``);
- ``val/unigram_ppl``: the unigram baseline of the validation split (a floor for "learned
  something");
- ``gen/entropy_<S>steps``, ``gen/ppl_<S>steps``: generation quality with S sampler steps;
- ``train/*``: the optimisation itself (``train/loss_smooth``: a bias-corrected EMA of
  ``train/loss``);
- ``tokens``, ``flops``, ``flops_with_embedding``, ``wall_time_s``: the accounting, logged at
  every step that logs anything else (training records and every evaluation record), so any
  metric can be charted against them (``docs/tracking.md``).

The step itself is never a metric (MLflow records it with every value); Ray Tune gets it in
each report as ``STEP`` (``during_training``).

On a source whose law is known (``data.source: markov``, docs/synthetic.md), also:

- ``val/nelbo_gap``: validation NELBO per token minus the exact NLL per token of the same
  sequences (whose mean is H(X_1:L) / L, the entropy rate plus a start-up term); ``val/true_nll``
  that exact NLL, ``val/entropy_rate`` the chain's entropy rate h;
- ``gen/true_nll_<S>steps``: exact NLL per token of samples under the source;
  ``gen/unigram_entropy_<S>steps``, ``gen/bigram_entropy_<S>steps``: entropies of the samples'
  pooled unigram / bigram histograms, beside the held-out data's ``gen/unigram_entropy_source``,
  ``gen/bigram_entropy_source``;
- the exact denoiser's value of each, with the suffix ``_oracle`` (``val/nelbo_gap_oracle``,
  ``gen/true_nll_8steps_oracle``): same settings, same sequences, next to the trained model's in
  the MLflow UI.  ``xdlm oracle`` logs the same names with ``/k<k>`` appended (``val/nelbo_gap_oracle/k0.1``).
"""

from __future__ import annotations

VALIDATION = "validation"
"""The data layer's name of the validation split of the training corpus."""

TRAIN_LOSS = "train/loss"
TRAIN_LR = "train/lr"
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_TOKENS_PER_S = "train/tokens_per_s"
TRAIN_LOSS_SMOOTH = "train/loss_smooth"
"""Bias-corrected EMA of ``train/loss`` over its logged points (``tracking.loss_smoothing``)."""
TOKENS = "tokens"
"""Training tokens seen so far (all workers)."""
FLOPS = "flops"
"""Training FLOPs so far, non-embedding: (6 N + 12 n_layers D L) per token (models.accounting)."""
FLOPS_WITH_EMBEDDING = "flops_with_embedding"
"""``flops`` plus the output head's 6 D V per token (models.accounting)."""
WALL_TIME = "wall_time_s"
"""Training wall clock in seconds, summed over restarts (train.state.Counters)."""
ACCOUNTING = (TOKENS, FLOPS, FLOPS_WITH_EMBEDDING, WALL_TIME)
"""Logged beside every training and evaluation record: the x-axes runs share."""
STEP = "step"
"""The optimizer step in Ray/Tune reports (never an MLflow metric)."""
SAMPLES_TABLE = "samples.json"
"""The MLflow table of generated samples (columns ``SAMPLE_COLUMNS``)."""
SAMPLE_COLUMNS = ("step", "sampler_steps", "k", "index", "text")
UNIGRAM_PPL = "val/unigram_ppl"
TRUE_NLL = "val/true_nll"
"""Exact NLL per token of the validation sequences under a known source."""
ENTROPY_RATE = "val/entropy_rate"
"""Entropy rate (nats/token) of a known source."""
ORACLE_SUFFIX = "_oracle"
"""Appended to a metric's name for the exact denoiser's value of it."""


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


def _oracle(name: str, oracle: bool) -> str:
    return name + ORACLE_SUFFIX if oracle else name


def nelbo_gap(oracle: bool = False) -> str:
    """Validation NELBO per token above the exact NLL per token of the same sequences."""
    return _oracle("val/nelbo_gap", oracle)


def true_nll(steps: int, oracle: bool = False) -> str:
    """Exact NLL per token, under the source, of samples drawn with ``steps`` sampler steps."""
    return _oracle(f"gen/true_nll_{int(steps)}steps", oracle)


def pooled_entropy(kind: str, steps: int, oracle: bool = False) -> str:
    """Entropy of the pooled ``kind`` (unigram / bigram) histogram of samples at ``steps``."""
    return _oracle(f"gen/{kind}_entropy_{int(steps)}steps", oracle)


def source_entropy(kind: str) -> str:
    """The same pooled ``kind`` entropy of held-out data from the source (the target)."""
    return f"gen/{kind}_entropy_source"


def with_k(name: str, k: float) -> str:
    """``name`` for one k of the oracle study (``xdlm oracle``): ``val/nelbo_gap_oracle/k0.1``."""
    return f"{name}/k{k:g}"


def during_training() -> tuple[str, ...]:
    """What every training worker reports to Ray Tune at each evaluation (MLflow gets the same
    evaluation metrics, with ``ACCOUNTING`` instead of the step)."""
    return (nelbo(), ppl(), STEP, TOKENS)


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

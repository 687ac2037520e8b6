"""Generative-perplexity scorers: a Hugging Face causal LM from a local directory and the causal
DiT of a run directory, each against a direct computation with the same model."""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from xdlm.checkpoint import write_checkpoint
from xdlm.config import load_job, to_yaml
from xdlm.eval.evaluators import load_evaluator
from xdlm.eval.generation import generative_perplexity
from xdlm.models import build_model

TEXTS = ["the cat sat on the mat", "a dog ran in the park and the cat sat"]


class WordTokenizer:
    """The diffusion model's tokenizer stand-in: whitespace words with [BOS]/[EOS]/[MASK]."""

    def __init__(self):
        words = sorted({w for t in TEXTS for w in t.split()})
        self.vocab = ["[BOS]", "[EOS]", "[MASK]", *words]
        self.vocab_size, self.bos_id, self.eos_id, self.mask_id = len(self.vocab), 0, 1, 2

    def encode(self, text):
        return [self.vocab.index(w) for w in text.split()]

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(self.vocab[i] for i in ids if not (skip_special_tokens and i < 3))


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    words = sorted({w for t in TEXTS for w in t.split()})
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<|endoftext|>", "<unk>", *words])}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>",
                                                  eos_token="<|endoftext|>", unk_token="<unk>")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(backend.get_vocab()), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config).eval()  # no dropout in the reference
    directory = tmp_path_factory.mktemp("hf-evaluator")
    hf_tok.save_pretrained(directory)
    model.save_pretrained(directory)
    return directory, hf_tok, model


def test_hf_evaluator_from_a_local_directory(hf_model_dir):
    directory, hf_tok, model = hf_model_dir
    ours = WordTokenizer()
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(ours.encode(t)) for t in TEXTS], batch_first=True,
                                             padding_value=ours.eos_id)
    scorer = load_evaluator(str(directory), ours, "cpu")
    got = generative_perplexity(scorer, tokens)
    # reference: the model's own mean cross-entropy over the re-tokenized texts, BOS-prefixed
    total, count = 0.0, 0
    for text in TEXTS:
        ids = torch.tensor([[hf_tok.bos_token_id, *hf_tok(text, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            loss = model(ids, labels=ids).loss
        total += float(loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    assert got == pytest.approx(math.exp(total / count), rel=1e-5)


def test_causal_dit_run_directory_is_scored_with_its_own_ids(tmp_path):
    job = load_job(None, ["model.backbone=causal_dit", "model.size=custom", "model.n_layers=1", "model.hidden=32",
                          "model.n_heads=2", "model.max_seq_len=16", "model.dropout=0.0", "data.seq_len=16"])
    torch.manual_seed(0)
    model = build_model(job.model, 11)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)  # leave the zero init: otherwise every PPL is V
    write_checkpoint(tmp_path / "checkpoint_000", {"model": model.state_dict(), "ema": {"decay": 0.0, "shadow": []},
                                                   "counters": {"step": 1, "tokens": 1}}, to_yaml(job))

    class Tok:
        vocab_size = 11

    tokens = torch.randint(0, 11, (3, 12), generator=torch.Generator().manual_seed(1))
    scorer = load_evaluator(str(tmp_path), Tok(), "cpu")
    with torch.no_grad():
        want = math.exp(-float(model.log_likelihood(tokens).sum()) / (3 * 11))
    assert generative_perplexity(scorer, tokens) == pytest.approx(want, rel=1e-5)
    assert want != pytest.approx(11.0, rel=1e-3)


def test_unreachable_hub_model_is_a_clear_error(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="eval.evaluator: cannot load 'no-such-org/no-such-model'"):
        load_evaluator("no-such-org/no-such-model", WordTokenizer(), "cpu")

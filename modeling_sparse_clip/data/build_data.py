"""Build (or load from the cache) everything the embedded job needs, and report it:

    python -m modeling_sparse_clip.data.build_data --cache_dir .cache/data --data_card outputs/DATA_CARD.md

the corpus (per-source counts), the held-out evaluation sets, the concept vocabulary and the data card.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import build_corpus, corpus_report, format_report
from .data_card import write_data_card
from .eval_sets import load_eval_sets
from .install_sources import DEFAULT_CACHE_DIR
from .vocabulary import build_vocabulary

logger = logging.getLogger(__name__)


@dataclass
class BuildDataArguments:
    cache_dir: str = field(default=DEFAULT_CACHE_DIR, metadata={"help": "data cache (npm sources, corpus, vocabulary)"})
    data_card: str = field(default="outputs/DATA_CARD.md", metadata={"help": "where to write the Markdown data card"})
    fashion_mnist_eval_size: int = field(default=1000, metadata={"help": "Fashion-MNIST test images to evaluate on"})
    retrieval_size: int = field(default=500, metadata={"help": "images per retrieval evaluation set"})
    summary_json: str | None = field(default=None, metadata={"help": "also write counts and timings as JSON here"})


def main(argv: list[str] | None = None) -> int:
    from transformers import HfArgumentParser

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (args,) = HfArgumentParser(BuildDataArguments).parse_args_into_dataclasses(args=argv)
    timings = {}
    start = time.perf_counter()
    corpus = build_corpus(args.cache_dir)
    timings["corpus_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    eval_sets = load_eval_sets(args.cache_dir, fashion_mnist_size=args.fashion_mnist_eval_size,
                               retrieval_size=args.retrieval_size, corpus=corpus)
    timings["eval_sets_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    vocabulary = build_vocabulary(Path(args.cache_dir) / "vocabulary.txt")
    timings["vocabulary_s"] = round(time.perf_counter() - start, 1)
    card = write_data_card(corpus, eval_sets, args.data_card)
    report = corpus_report(corpus)
    print(format_report(report))
    print("eval sets: " + ", ".join(f"{n} ({len(e)})" for n, e in eval_sets.items()))
    print(f"vocabulary: {len(vocabulary)} words; data card: {card}; timings: {timings}")
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps({
            "counts": report, "eval_sets": {n: len(e) for n, e in eval_sets.items()},
            "vocabulary_size": len(vocabulary), "timings": timings,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`sparse-clip-build-data`: build (or load from the cache) everything the embedded job needs, and report it:

    sparse-clip-build-data --cache_dir .cache/data --data_card outputs/DATA_CARD.md

the corpus (per-source counts), the held-out evaluation sets, the concept vocabulary and the data card.
The library call is `modeling_sparse_clip.data.embedded.build_embedded_data`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..atomic import atomic_write_text
from ..constants import DATA_CACHE_DIR
from ..data.corpus import format_report
from ..data.embedded import EmbeddedData, build_embedded_data
from . import run_command


@dataclass
class BuildDataArguments:
    cache_dir: str = field(default=str(DATA_CACHE_DIR), metadata={"help": "Data cache (npm sources, corpus, vocabulary)."})
    data_card: str = field(default="outputs/DATA_CARD.md", metadata={"help": "Where to write the Markdown data card."})
    fashion_mnist_eval_size: int = field(default=1000, metadata={"help": "Fashion-MNIST test images to evaluate on."})
    retrieval_size: int = field(default=500, metadata={"help": "Images per retrieval evaluation set."})
    summary_json: str | None = field(default=None, metadata={"help": "Also write counts and timings as JSON here."})


def run(argv) -> EmbeddedData:
    (args,) = HfArgumentParser(BuildDataArguments).parse_args_into_dataclasses(args=argv)
    data = build_embedded_data(args.cache_dir, args.data_card, args.fashion_mnist_eval_size, args.retrieval_size)
    summary = data.summary()
    print(format_report(summary["counts"]))
    print("eval sets: " + ", ".join(f"{n} ({size})" for n, size in summary["eval_sets"].items()))
    print(f"vocabulary: {len(data.vocabulary)} words; data card: {data.data_card}; timings: {data.timings}")
    if args.summary_json:
        atomic_write_text(args.summary_json, json.dumps(summary, indent=2))
    return data


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()

"""`sparse-clip-bench`: benchmark Sparse CLIP models, dense baselines and post-hoc SAEs side by side.

    sparse-clip-bench --models sparse=outputs/embedded/sparse dense=outputs/embedded/dense --suite embedded
    sparse-clip-bench --models outputs/dense outputs/sparse --sae outputs/sae_topk --output_dir outputs/bench

Writes results.json and results.md to --output_dir and prints the Markdown. The library call is
`modeling_sparse_clip.evaluation.runner.run` (its `BenchmarkArguments` are the flags).
"""

from __future__ import annotations

import os

from transformers import HfArgumentParser

from ..evaluation.runner import BenchmarkArguments
from ..evaluation.runner import run as run_benchmark
from . import run_command


def run(argv) -> dict:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    report = run_benchmark(args)
    path = os.path.join(args.output_dir, "results.md")
    print(path)
    with open(path) as f:
        print(f.read())
    return report


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()

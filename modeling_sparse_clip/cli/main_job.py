"""`sparse-clip-main`: the main job (`make main`): build the embedded corpus, train the embedded sparse
model and its dense baseline (the shipped `embedded_sparse` / `embedded_dense` recipes), evaluate both on
the held-out sets and print them side by side.

    sparse-clip-main                                   # outputs/embedded/{sparse,dense,bench,results.md}
    sparse-clip-main --num_train_epochs 1 --skip_eval

The library call is `modeling_sparse_clip.training.main_job.run_main_job`.
"""

from transformers import HfArgumentParser

from ..training.main_job import MainJobArguments, run_main_job
from . import run_command


def run(argv):
    (args,) = HfArgumentParser(MainJobArguments).parse_args_into_dataclasses(args=argv)
    return run_main_job(args)


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()

"""`sparse-clip-publish`: a trained or converted Sparse CLIP folder -> one Hub commit with code, processor,
model card and benchmark results (optionally the Gradio Space too).

    sparse-clip-publish --model_dir outputs/embedded/sparse --repo_id ORG/NAME \
        [--benchmark_json benchmarks/results/results.json] [--space_dir spaces --space_repo ORG/SPACE]

The library call is `modeling_sparse_clip.publishing.push_sparse_clip_to_hub`.
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..publishing import PublishResult, push_sparse_clip_to_hub
from . import run_command


@dataclass
class PublishArguments:
    model_dir: str = field(metadata={"help": "Folder of a trained or converted Sparse CLIP model (save_pretrained output)."})
    repo_id: str = field(metadata={"help": "Hub model repo to publish to, ORG/NAME."})
    benchmark_json: str | None = field(default=None, metadata={"help": "Benchmark results JSON (sparse-clip-bench's results.json) for the card's model-index."})
    benchmark_model: str | None = field(default=None, metadata={"help": "Which model of the benchmark JSON this is (default: the repo/folder name, or the only one)."})
    processor_dir: str | None = field(default=None, metadata={"help": "Folder to load the processor from when model_dir has none."})
    training_config: str | None = field(default=None, metadata={"help": "Training config (JSON/YAML) shown in the card (default: training_config.* in model_dir)."})
    license: str = field(default="apache-2.0", metadata={"help": "Licence id for the card metadata."})
    datasets: str | None = field(default=None, metadata={"help": "Comma-separated dataset ids the model was trained on, for the card metadata."})
    base_model: str | None = field(default=None, metadata={"help": "Hub id of the checkpoint this was converted or fine-tuned from."})
    space_dir: str | None = field(default=None, metadata={"help": "Also push this Gradio Space folder (e.g. spaces)."})
    space_repo: str | None = field(default=None, metadata={"help": "Space repo for --space_dir, ORG/SPACE."})
    token: str | None = field(default=None, metadata={"help": "Hub write token (default: HF_TOKEN or `hf auth login`)."})
    endpoint: str | None = field(default=None, metadata={"help": "Hub URL (default: HF_ENDPOINT or https://huggingface.co)."})
    private: bool = field(default=False, metadata={"help": "Create the repos private."})
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing to main."})
    exist_ok: bool = field(default=True, metadata={"help": "Allow publishing to an existing repo (false: fail if it exists)."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message."})


def run(argv) -> PublishResult:
    (args,) = HfArgumentParser(PublishArguments).parse_args_into_dataclasses(args=argv)
    card_kwargs = {
        "license": args.license,
        "datasets": [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None,
        "base_model": args.base_model,
        "training_config": args.training_config,
        "benchmark_model": args.benchmark_model,
    }
    result = push_sparse_clip_to_hub(
        args.model_dir, args.repo_id, processor=args.processor_dir, benchmark_json=args.benchmark_json,
        token=args.token, private=args.private, create_pr=args.create_pr, space_dir=args.space_dir,
        space_repo_id=args.space_repo, endpoint=args.endpoint, exist_ok=args.exist_ok,
        commit_message=args.commit_message, card_kwargs=card_kwargs,
    )
    print(f"Published {len(result.files)} files to {result.repo_url} (commit {result.commit_oid})")
    if result.pr_url:
        print(f"Pull request: {result.pr_url}")
    if result.space_url:
        print(f"Space: {result.space_url} (commit {result.space_commit_oid})")
    return result


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()

"""Publish a trained or converted Sparse CLIP model to the Hugging Face Hub in one step.

    push_sparse_clip_to_hub("outputs/embedded/sparse", "ORG/NAME", benchmark_json="benchmarks/results/results.json")
    model.push_to_hub("ORG/NAME", processor=processor)     # SparseCLIPModel.push_to_hub comes here
    sparse-clip-publish --model_dir outputs/embedded/sparse --repo_id ORG/NAME \
        [--benchmark_json benchmarks/results/results.json] [--space_dir spaces --space_repo ORG/SPACE]

What goes up, as one commit: the weights (safetensors), config.json with `auto_map`, the two Hub
code files (so `AutoModel.from_pretrained(repo, trust_remote_code=True)` needs nothing else), the
processor files, the benchmark JSON (as `benchmark_results.json`) and a README.md model card generated
by `modeling_sparse_clip.model_card` (metadata, `model-index` from the benchmark, sparsity facts, usage).
Optionally the Space folder goes to a Space repo whose `SPARSE_CLIP_MODEL` variable names the model.

Everything is assembled in a temporary staging copy: the source folder is never written to, so a
failed push leaves it exactly as it was. Hub errors (repo exists, token refused, Hub unreachable) are
raised as `PublishError` with one paragraph saying what happened and what to do.

The endpoint is the Hub's (`HF_ENDPOINT`, default https://huggingface.co) unless `endpoint=` /
`--endpoint` names another (the tests run one on loopback: `python -m tests.fixtures.hub_server`).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, RepoUrl, SpaceCard, SpaceCardData
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

from .atomic import atomic_write_text
from .constants import AUTO_MAP, HUB_CODE_FILES, PROCESSOR_FILES, WEIGHT_FILES
from .model_card import BenchmarkFormatError, build_model_card

logger = logging.getLogger(__name__)

# Trainer leftovers that have no place in a published model (optimizer state, pickled args, checkpoints).
MODEL_IGNORE = (".git", "__pycache__", "*.pyc", ".cache", "checkpoint-*", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "training_args.bin")
SPACE_IGNORE = (".git", "__pycache__", "*.pyc", ".cache", ".gradio", "flagged", "gradio_cached_examples")
BENCHMARK_NAME = "benchmark_results.json"
SPACE_MODEL_VARIABLE = "SPARSE_CLIP_MODEL"


class PublishError(RuntimeError):
    """A push that did not happen, with one paragraph saying why and what to do."""


@dataclass
class PublishResult:
    repo_url: str
    commit_oid: str
    commit_url: str
    pr_url: str | None
    files: list[str]
    space_url: str | None = None
    space_commit_oid: str | None = None


# ----------------------------------------------------------------------------------------------
# Staging: a complete, checked copy of what will be pushed
# ----------------------------------------------------------------------------------------------
def _ensure_hub_code(stage: Path) -> None:
    """The remote-code files and `auto_map`, added from this package where a folder lacks them."""
    package_dir = Path(__file__).parent  # the Hub code files are this package's own
    for name in HUB_CODE_FILES:
        if not (stage / name).exists():
            shutil.copy2(package_dir / name, stage / name)
    config_path = stage / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("auto_map", {}).get("AutoModel") is None or config["auto_map"].get("AutoConfig") is None:
        config["auto_map"] = {**config.get("auto_map", {}), **AUTO_MAP}
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _check_model_folder(stage: Path, source: str) -> None:
    config_path = stage / "config.json"
    if not config_path.is_file():
        raise PublishError(f"{source} has no config.json, so it is not a saved model: give the folder that SparseCLIPModel.save_pretrained (or a converter, or training) wrote.")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != "sparse_clip":
        raise PublishError(f"{source}/config.json describes a {model_type!r} model, not a Sparse CLIP one: convert it first (sparse-clip-convert-clip or sparse-clip-convert-open-clip).")
    if not any((stage / name).is_file() for name in WEIGHT_FILES):
        found = sorted(p.name for p in stage.iterdir())
        raise PublishError(f"{source} has no safetensors weights ({' or '.join(WEIGHT_FILES)}; found {found}): save the model with save_pretrained (safetensors is its default) and publish that folder.")


def stage_model(
    folder_or_model,
    stage: Path,
    *,
    repo_id: str,
    processor=None,
    benchmark_json: str | os.PathLike | None = None,
    card_kwargs: dict | None = None,
) -> list[str]:
    """Write everything that will be pushed into `stage` (an empty folder); returns the file list."""
    if isinstance(folder_or_model, (str, os.PathLike)):
        source = Path(folder_or_model)
        if not source.is_dir():
            raise PublishError(f"Model folder {source} does not exist: give --model_dir the folder that training or conversion wrote.")
        shutil.copytree(source, stage, ignore=shutil.ignore_patterns(*MODEL_IGNORE), dirs_exist_ok=True)
        source_name = str(source)
    else:
        folder_or_model.save_pretrained(stage)
        source_name = f"the {type(folder_or_model).__name__} given"
    if processor is not None:
        if isinstance(processor, (str, os.PathLike)):
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(processor)
        processor.save_pretrained(stage)
    _check_model_folder(stage, source_name)
    _ensure_hub_code(stage)
    if not any((stage / name).is_file() for name in PROCESSOR_FILES):
        logger.warning(
            "%s holds no processor files: AutoProcessor.from_pretrained(%r) will fail. Pass processor= "
            "(CLI: --processor_dir) to publish one.", source_name, repo_id,
        )
    benchmark = None
    if benchmark_json is not None:
        if not Path(benchmark_json).is_file():
            raise PublishError(f"Benchmark JSON {benchmark_json} does not exist: run the benchmark first (sparse-clip-bench) or leave --benchmark_json out.")
        shutil.copy2(benchmark_json, stage / BENCHMARK_NAME)
        benchmark = stage / BENCHMARK_NAME
    elif (stage / BENCHMARK_NAME).is_file():  # a folder published before keeps its results
        benchmark = stage / BENCHMARK_NAME
    try:
        card = build_model_card(stage, repo_id=repo_id, benchmark=benchmark, **(card_kwargs or {}))
    except BenchmarkFormatError as exc:
        raise PublishError(f"The benchmark results cannot go into the model card: {exc}") from None
    card.save(stage / "README.md")
    return sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())


SPACE_PACKAGE = "sparse-clip"


def space_requirement() -> str:
    """The requirement a published Space installs: this package, its `space` extra, this version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{SPACE_PACKAGE}[space]=={version(SPACE_PACKAGE)}"
    except PackageNotFoundError:
        return f"{SPACE_PACKAGE}[space]"


def stage_space(space_dir: str | os.PathLike, stage: Path, *, model_repo_id: str, space_repo_id: str, package_requirement: str | None = None) -> None:
    """Copy the Space into `stage` as a repo that runs on its own: its card names the model (the
    `models:` metadata links them on the Hub), its requirements.txt installs this package
    (`package_requirement`, default `sparse-clip[space]==<this version>`; a local wheel or checkout path
    for a local test), and the model comes from the `SPARSE_CLIP_MODEL` variable (a Hub id or a path)."""
    source = Path(space_dir)
    if not (source / "app.py").is_file():
        raise PublishError(f"{source} has no app.py, so it is not a Gradio Space folder: give --space_dir the folder holding the Space (spaces/).")
    shutil.copytree(source, stage, ignore=shutil.ignore_patterns(*SPACE_IGNORE), dirs_exist_ok=True)
    for script in stage.glob("*.py"):  # a Space imports the installed package, never a checkout next to it
        if "sys.path" in script.read_text(encoding="utf-8"):
            raise PublishError(f"{script.name} in {source} edits sys.path: a published Space must import the installed {SPACE_PACKAGE} package only.")
    requirements = stage / "requirements.txt"
    lines = requirements.read_text(encoding="utf-8").splitlines() if requirements.is_file() else []
    package = re.compile(rf"^{re.escape(SPACE_PACKAGE)}(\[[^\]]*\])?\s*([<>=!~@ ].*)?$")
    lines = [line for line in lines if not package.match(line.strip())]
    atomic_write_text(requirements, "\n".join([*lines, package_requirement or space_requirement()]) + "\n")
    readme = stage / "README.md"
    if readme.is_file():
        card = SpaceCard.load(readme)
    else:
        data = SpaceCardData(title=space_repo_id.split("/")[-1], sdk="gradio", app_file="app.py")
        card = SpaceCard(f"---\n{data.to_yaml()}\n---\n\nExplore the features of the Sparse CLIP model [{model_repo_id}](../../{model_repo_id}).\n")
    models = list(card.data.get("models") or [])
    if model_repo_id not in models:
        card.data.models = [*models, model_repo_id]
    card.data.sdk = card.data.get("sdk") or "gradio"
    card.save(readme)


# ----------------------------------------------------------------------------------------------
# Errors in plain words
# ----------------------------------------------------------------------------------------------
def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def explain_hub_error(exc: BaseException, *, endpoint: str, repo_id: str, step: str) -> PublishError | None:
    """A PublishError that says what to do for a Hub/network failure; None for anything else."""
    import httpx2

    server = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, OfflineModeIsEnabled):
        return PublishError(f"Cannot {step}: HF_HUB_OFFLINE=1 is set, which blocks every Hub request. Unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) and publish again; nothing was pushed.")
    if "xet-write-token" in str(exc) or "xet-read-token" in str(exc):
        return PublishError(f"Cannot {step}: the Hub at {endpoint} does not speak the Xet storage protocol that the installed hf_xet uses for large files. Set HF_HUB_DISABLE_XET=1 in the environment before starting Python so that large files go over git-LFS, and publish again.")
    if isinstance(exc, (httpx2.TransportError, ConnectionError)) and not isinstance(exc, HfHubHTTPError):
        return PublishError(f"Cannot {step}: the Hub at {endpoint} cannot be reached ({server}). Check the network connection and HF_ENDPOINT (or --endpoint) and publish again; nothing was changed locally.")
    status = _status(exc)
    if status == 409 and step.startswith("create"):
        return PublishError(f"Cannot {step}: the repository {repo_id} already exists on {endpoint} and exist_ok=False (--exist_ok false) was asked. Publish with exist_ok=True to add a new commit to it, or choose another --repo_id.")
    if status == 401:
        return PublishError(f"Cannot {step}: the Hub at {endpoint} refused the token (401 Unauthorized: {server}). Log in with `hf auth login`, set HF_TOKEN, or pass token= (--token) with a token that has WRITE access to {repo_id.split('/')[0]}, and publish again.")
    if status == 403:
        return PublishError(f"Cannot {step}: the token may not write to {repo_id} (403 Forbidden: {server}). Use a write token of an account allowed in that namespace, push to your own namespace, or open a pull request with create_pr=True (--create_pr).")
    if isinstance(exc, RepositoryNotFoundError) or status == 404:
        return PublishError(f"Cannot {step}: {repo_id} was not found on {endpoint} ({server}). Check the repo id and that your token can see it; publishing creates the repo unless its namespace is wrong.")
    if isinstance(exc, HfHubHTTPError):
        return PublishError(f"Cannot {step}: the Hub at {endpoint} answered {status} ({server}). Nothing was changed locally; fix the cause above and publish again.")
    if isinstance(exc, ValueError) and "LFS batch API returned errors" in str(exc):
        return PublishError(f"Cannot {step}: the Hub at {endpoint} refused a large file ({server}). Make the file smaller (e.g. shard with save_pretrained(max_shard_size=...)) and publish again.")
    return None


# ----------------------------------------------------------------------------------------------
# Publishing
# ----------------------------------------------------------------------------------------------
def _create_or_reuse_repo(api: HfApi, repo_id: str, *, repo_type: str, exist_ok: bool, **kwargs) -> RepoUrl:
    """`create_repo`, treating "already exists" ourselves: huggingface_hub 2.4's own exist_ok fallback
    (after a 401/403) builds its RepoUrl for the default endpoint and fails on any other Hub."""
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    try:
        return api.create_repo(repo_id, repo_type=repo_type, exist_ok=False, **kwargs)
    except HfHubHTTPError as exc:
        status = _status(exc)
        # 403: a token that may write to the repo but not create repos in that namespace.
        if exist_ok and (status == 409 or (status == 403 and api.repo_exists(repo_id, repo_type=repo_type))):
            return RepoUrl(f"{api.endpoint}/{prefix}{repo_id}", endpoint=api.endpoint)
        raise


def push_sparse_clip_to_hub(
    folder_or_model,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    commit_message: str | None = None,
    processor=None,
    benchmark_json: str | os.PathLike | None = None,
    space_dir: str | os.PathLike | None = None,
    space_repo_id: str | None = None,
    endpoint: str | None = None,
    exist_ok: bool = True,
    card_kwargs: dict | None = None,
) -> PublishResult:
    """Push a Sparse CLIP model (a saved folder or a model object) with its processor, code, card and
    benchmark results to `repo_id` as one commit; with `space_dir`, push the Space to `space_repo_id`.

    processor: a processor object or folder, saved with the model. card_kwargs go to
    `modeling_sparse_clip.model_card.build_model_card` (license, datasets, base_model, training_config,
    benchmark_model, measured_l0, ...). Raises `PublishError`.
    """
    if "/" not in repo_id:
        raise PublishError(f"repo_id {repo_id!r} has no namespace: use ORG/NAME (or USER/NAME).")
    if space_dir is not None and not space_repo_id:
        raise PublishError("space_dir was given without space_repo_id (CLI: --space_repo ORG/SPACE): say which Space repo the Space files go to.")
    api = HfApi(endpoint=endpoint, token=token)
    endpoint = api.endpoint
    with tempfile.TemporaryDirectory(prefix="sparse-clip-publish-") as tmp:
        stage = Path(tmp) / "model"
        files = stage_model(folder_or_model, stage, repo_id=repo_id, processor=processor, benchmark_json=benchmark_json, card_kwargs=card_kwargs)
        step = f"create the model repo {repo_id}"
        try:
            repo_url = _create_or_reuse_repo(api, repo_id, repo_type="model", exist_ok=exist_ok, private=private)
            step = f"push the model to {repo_id}"
            commit = api.upload_folder(
                folder_path=stage,
                repo_id=repo_url.repo_id,
                repo_type="model",
                commit_message=commit_message or "Publish Sparse CLIP model, processor, code, card and benchmark results",
                create_pr=create_pr,
            )
            result = PublishResult(repo_url=str(repo_url), commit_oid=commit.oid, commit_url=commit.commit_url, pr_url=commit.pr_url, files=files)
            if space_dir is not None:
                if "space_cache/space.json" not in files:
                    logger.warning("%s has no space_cache/: the Space will build its labels and atlas at its first start (minutes). "
                                   "Build them first: python spaces/app.py --model MODEL --build_only.", repo_id)
                space_stage = Path(tmp) / "space"
                stage_space(space_dir, space_stage, model_repo_id=repo_url.repo_id, space_repo_id=space_repo_id)
                step = f"create the Space repo {space_repo_id}"
                variables = [{"key": SPACE_MODEL_VARIABLE, "value": repo_url.repo_id, "description": "The Sparse CLIP model the app loads"}]
                space_url = _create_or_reuse_repo(api, space_repo_id, repo_type="space", exist_ok=True, space_sdk="gradio", private=private, space_variables=variables)
                # create_repo sets variables only on a new Space: set it on an existing one too.
                api.add_space_variable(space_url.repo_id, SPACE_MODEL_VARIABLE, repo_url.repo_id, description=variables[0]["description"])
                step = f"push the Space files to {space_repo_id}"
                space_commit = api.upload_folder(folder_path=space_stage, repo_id=space_url.repo_id, repo_type="space", commit_message=f"Space for {repo_url.repo_id}", create_pr=create_pr)
                result.space_url, result.space_commit_oid = str(space_url), space_commit.oid
        except Exception as exc:
            explained = explain_hub_error(exc, endpoint=endpoint, repo_id=repo_id if "model" in step else space_repo_id, step=step)
            if explained is None:
                raise
            raise explained from exc
    return result


# The options `SparseCLIPModel.push_to_hub(repo_id, ...)` hands to `push_sparse_clip_to_hub` (beyond token,
# private and create_pr, which transformers' push has too); any other keyword goes to transformers' own push.
PUBLISH_OPTIONS: tuple[str, ...] = tuple(
    name for name in inspect.signature(push_sparse_clip_to_hub).parameters
    if name not in ("folder_or_model", "repo_id", "token", "private", "create_pr")
)

__all__ = ["PUBLISH_OPTIONS", "PublishError", "PublishResult", "explain_hub_error", "push_sparse_clip_to_hub", "stage_model", "stage_space"]

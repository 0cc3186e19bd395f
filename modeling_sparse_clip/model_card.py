"""The README.md model card of a Sparse CLIP checkpoint: Hub metadata, sparsity facts, results, usage.

`build_model_card(folder_or_config, benchmark=..., training_config=...)` returns a
`huggingface_hub.ModelCard` whose YAML block holds library_name, pipeline_tag, tags, license,
datasets and (from a benchmark JSON) a `model-index` made of `EvalResult`s, and whose body states
the architecture (towers, width, activation, cap as a linear value, measured L0), how to load the
model with and without this package, and the training configuration.

Benchmark JSON: three shapes are accepted (see `parse_benchmark`):

1. per model, per evaluation set, metric -> value::

       {"models": {"sparse-b32": {"fashion_mnist": {"top1": 0.61, "top5": 0.93, "image_l0": 41.2},
                                  "emoji_retrieval": {"task": "image-text-retrieval", "i2t_r@1": 0.22}}}}

   A set may also be `{"metrics": {...}, "task": ..., "split": ..., "dataset_type": ...}`.
2. a list of rows (or `{"results": [rows]}`), each
   `{"task": ..., "dataset": ..., "metric": ..., "value": float}` with optional `model`, `split`,
   `dataset_type`, `metric_name`.
3. either of the above with several models: the card picks the entry named `model_name`
   (or the only one) and says which names exist otherwise.

Metrics whose name contains `l0` (e.g. `l0`, `image_l0`, `text_l0`) are sparsity measurements: they
go to the card's sparsity table, not to `model-index`. Values are kept exactly as the JSON gives
them (fractions stay fractions). Non-numeric values are ignored.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .atomic import atomic_file

PAPER_URL = "https://arxiv.org/abs/2601.20075"
BASE_TAGS = ["sparse-clip", "clip", "interpretability", "sparse-embeddings", "zero-shot-image-classification", "custom_code"]
TRAINING_CONFIG_NAMES = ("training_config.json", "training_config.yaml", "training_config.yml", "train_config.json", "train_config.yaml", "train_config.yml")
SET_KEYS = ("task", "split", "dataset_type", "dataset", "dataset_name", "metrics", "config")
NOT_METRICS = {"num_images", "num_texts", "num_samples", "width", "seed"}  # counts about the run, not results
CLASSIFICATION_METRICS = re.compile(r"(top[-_]?\d|accuracy|per_class|^acc(@\d+)?$)", re.I)
RETRIEVAL_METRICS = re.compile(r"(recall|r@\d+|i2t|t2i|image_retrieval|text_retrieval|mrr|ndcg|map@)", re.I)
SPARSITY_METRICS = re.compile(r"(l0|active_features|dead_features)", re.I)
INTERPRETABILITY_METRICS = re.compile(r"(clarity|modality|multimodal|image_only|text_only|label_|labelled|word_similarity)", re.I)


@dataclass
class BenchmarkRow:
    """One measured number: `metric` = `value` for `model` on `dataset` (a set of `task`)."""

    task: str
    dataset: str
    metric: str
    value: float
    model: str | None = None
    split: str | None = None
    dataset_type: str | None = None
    metric_name: str | None = None

    @property
    def is_sparsity(self) -> bool:
        """L0 and feature-usage numbers: shown with the architecture, kept out of `model-index`."""
        return bool(SPARSITY_METRICS.search(self.metric)) and not INTERPRETABILITY_METRICS.search(self.metric)


class BenchmarkFormatError(ValueError):
    pass


# ----------------------------------------------------------------------------------------------
# Benchmark JSON
# ----------------------------------------------------------------------------------------------
def _infer_task(metrics: Iterable[str]) -> str:
    """The task of an evaluation set, from the names of the metrics measured on it."""
    metrics = list(metrics)
    if any(CLASSIFICATION_METRICS.search(m) for m in metrics):
        return "zero-shot-image-classification"
    if any(RETRIEVAL_METRICS.search(m) for m in metrics):
        return "image-text-retrieval"
    if any(INTERPRETABILITY_METRICS.search(m) for m in metrics):
        return "feature-interpretability"
    return "evaluation"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _rows_from_set(model: str, set_name: str, entry: Any) -> list[BenchmarkRow]:
    if isinstance(entry, list):  # a model's results given as rows
        return [_row_from_dict(r, default_model=model) for r in entry]
    if not isinstance(entry, dict):
        return []
    metrics = entry.get("metrics") if isinstance(entry.get("metrics"), dict) else {k: v for k, v in entry.items() if k not in SET_KEYS}
    metrics = {k: v for k, v in metrics.items() if k not in NOT_METRICS and _number(v) is not None}
    set_task = entry.get("task") or _infer_task(metrics)
    rows = []
    for metric, value in metrics.items():
        # Interpretability numbers measured on a classification set are still not classification results.
        task = "feature-interpretability" if INTERPRETABILITY_METRICS.search(metric) and not entry.get("task") else set_task
        rows.append(BenchmarkRow(
            task=task,
            dataset=entry.get("dataset_name") or entry.get("dataset") or set_name,
            metric=metric,
            value=float(value),
            model=model,
            split=entry.get("split"),
            dataset_type=entry.get("dataset_type") or set_name,
        ))
    return rows


def _row_from_dict(row: Any, default_model: str | None = None) -> BenchmarkRow:
    if not isinstance(row, dict):
        raise BenchmarkFormatError(f"A benchmark row must be an object, got {row!r}.")
    missing = [k for k in ("dataset", "metric", "value") if k not in row]
    if missing:
        raise BenchmarkFormatError(
            f"Benchmark row {row!r} lacks {missing}: each row needs task, dataset, metric and value."
        )
    number = _number(row["value"])
    if number is None:
        raise BenchmarkFormatError(f"Benchmark row {row!r}: value must be a finite number.")
    return BenchmarkRow(
        task=row.get("task") or _infer_task([str(row["metric"])]),
        dataset=str(row["dataset"]),
        metric=str(row["metric"]),
        value=number,
        model=row.get("model", default_model),
        split=row.get("split"),
        dataset_type=row.get("dataset_type") or str(row["dataset"]),
        metric_name=row.get("metric_name"),
    )


def parse_benchmark(source: str | os.PathLike | dict | list) -> list[BenchmarkRow]:
    """All rows of a benchmark JSON (path, dict or list) in any of the accepted shapes."""
    data = source
    if isinstance(source, (str, os.PathLike)):
        try:
            data = json.loads(Path(source).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"Benchmark JSON {source} does not exist: give the file the benchmark runner wrote.") from None
        except json.JSONDecodeError as exc:
            raise BenchmarkFormatError(f"Benchmark JSON {source} is not valid JSON ({exc}).") from None
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        data = data["results"]
    if isinstance(data, list):
        return [_row_from_dict(r) for r in data]
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        rows = []
        for model, sets in data["models"].items():
            if isinstance(sets, list):
                rows.extend(_row_from_dict(r, default_model=model) for r in sets)
            elif isinstance(sets, dict):
                for set_name, entry in sets.items():
                    rows.extend(_rows_from_set(model, set_name, entry))
        return rows
    raise BenchmarkFormatError(
        "Unrecognised benchmark JSON: expected {\"models\": {name: {set: {metric: value}}}}, "
        "a list of {task, dataset, metric, value} rows, or {\"results\": [rows]}."
    )


def select_model_rows(rows: list[BenchmarkRow], model_name: str | None, fallback_names: Iterable[str] = ()) -> list[BenchmarkRow]:
    """The rows of one model: `model_name`, else one of `fallback_names`, else the only model present."""
    names = list(dict.fromkeys(r.model for r in rows if r.model is not None))
    if not names:
        return rows
    for candidate in [model_name, *fallback_names]:
        if candidate in names:
            return [r for r in rows if r.model == candidate]
    if len(names) == 1 and model_name is None:
        return rows
    raise BenchmarkFormatError(
        f"The benchmark JSON holds results for {names}; none is {model_name or 'named like this model'}. "
        "Pass benchmark_model=<one of those names> (CLI: --benchmark_model)."
    )


# ----------------------------------------------------------------------------------------------
# Facts from the checkpoint
# ----------------------------------------------------------------------------------------------
def _load_config(folder_or_config) -> tuple[Any, Path | None]:
    from .configuration_sparse_clip import SparseCLIPConfig

    if isinstance(folder_or_config, SparseCLIPConfig):
        return folder_or_config, None
    if hasattr(folder_or_config, "config") and isinstance(folder_or_config.config, SparseCLIPConfig):
        return folder_or_config.config, None
    folder = Path(folder_or_config)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: give a folder written by SparseCLIPModel.save_pretrained.")
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type != SparseCLIPConfig.model_type:
        raise ValueError(f"{folder}/config.json is a {model_type!r} config, not a Sparse CLIP one ({SparseCLIPConfig.model_type!r}).")
    return SparseCLIPConfig.from_pretrained(folder), folder


def _checkpoint_facts(folder: Path | None) -> dict:
    """Parameter count and learned logit scale read from the safetensors files (no model built)."""
    if folder is None:
        return {}
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return {}
    params, logit_scale = 0, None
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                shape = f.get_slice(key).get_shape()
                params += math.prod(shape) if shape else 1
                if key == "logit_scale":
                    logit_scale = float(f.get_tensor(key).float().item())
    return {"parameters": params, "logit_scale_param": logit_scale}


def _tower_summary(config) -> str:
    model_type = getattr(config, "model_type", "?")
    if model_type == "timm_wrapper":
        return f"timm `{getattr(config, 'architecture', '?')}`"
    bits = [f"`{model_type}`"]
    for attr, label in (("num_hidden_layers", "layers"), ("hidden_size", "width"), ("image_size", "px"), ("patch_size", "patch")):
        value = getattr(config, attr, None)
        if value is not None:
            bits.append(f"{value} {label}" if label != "width" else f"width {value}")
    return ", ".join(bits)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


# ----------------------------------------------------------------------------------------------
# The card
# ----------------------------------------------------------------------------------------------
def _load_training_config(training_config, folder: Path | None) -> dict | None:
    if isinstance(training_config, dict):
        return training_config
    path = Path(training_config) if training_config else None
    if path is None and folder is not None:
        path = next((folder / n for n in TRAINING_CONFIG_NAMES if (folder / n).is_file()), None)
    if path is None:
        return None
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"Training config {path} must hold a mapping of settings.")
    return data


def _datasets_from_training(training: dict | None) -> list[str]:
    if not training:
        return []
    found = []
    for key in ("datasets", "dataset", "dataset_name", "train_dataset"):
        value = training.get(key)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            found.extend(str(v) for v in value)
    return found


def build_model_card(
    folder_or_config,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    benchmark: str | os.PathLike | dict | list | None = None,
    benchmark_model: str | None = None,
    training_config: str | os.PathLike | dict | None = None,
    measured_l0: float | dict[str, float] | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    base_model: str | None = None,
    extra_tags: Iterable[str] = (),
) -> ModelCard:
    """The model card of a saved Sparse CLIP folder (or of a config/model object).

    repo_id: where it will live (used in the loading snippets); model_name: the card title and the
    `model-index` name (default: the repo name or folder name). benchmark: a benchmark JSON (path or
    parsed) in a shape `parse_benchmark` accepts; benchmark_model picks its entry. training_config:
    dict or JSON/YAML path (default: a `training_config.*` / `train_config.*` file in the folder).
    measured_l0: an L0 (or {"image": .., "text": ..}) measured elsewhere, shown beside the JSON's.
    """
    config, folder = _load_config(folder_or_config)
    name = model_name or (repo_id.split("/")[-1] if repo_id else (folder.name if folder else "sparse-clip"))
    repo_ref = repo_id or f"<org>/{name}"

    rows = []
    if benchmark is not None:
        fallbacks = [n for n in (repo_id, name, folder.name if folder else None) if n]
        rows = select_model_rows(parse_benchmark(benchmark), benchmark_model or model_name, fallbacks)
    eval_rows = [r for r in rows if not r.is_sparsity]
    l0_rows = [r for r in rows if r.is_sparsity]
    if isinstance(measured_l0, (int, float)):
        l0_rows.append(BenchmarkRow("sparsity", "given", "l0", float(measured_l0)))
    elif isinstance(measured_l0, dict):
        l0_rows.extend(BenchmarkRow("sparsity", "given", f"{k}_l0", float(v)) for k, v in measured_l0.items())

    training = _load_training_config(training_config, folder)
    all_datasets = list(dict.fromkeys([*(datasets or []), *_datasets_from_training(training)]))

    eval_results = [
        EvalResult(
            task_type=r.task,
            dataset_type=r.dataset_type or r.dataset,
            dataset_name=r.dataset,
            dataset_split=r.split,
            metric_type=r.metric,
            metric_name=r.metric_name or r.metric,
            metric_value=r.value,
        )
        for r in eval_rows
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        license=license,
        tags=list(dict.fromkeys([*BASE_TAGS, f"activation-{config.activation}", *extra_tags])),
        datasets=all_datasets or None,
        base_model=base_model,
        model_name=name if eval_results else None,
        eval_results=eval_results or None,
    )
    body = _card_body(config, name, repo_ref, _checkpoint_facts(folder), eval_rows, l0_rows, training, base_model)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def _card_body(config, name, repo_ref, facts, eval_rows, l0_rows, training, base_model) -> str:
    width, text_w, vision_w = config.projection_dim, config.text_embed_dim, config.vision_embed_dim
    widths = [w for w in (text_w, vision_w) if w]
    expansion = f" ({width / min(widths):.4g}x the narrower tower)" if widths else ""
    activation = {"relu": "ReLU (the paper's method)", "topk": f"TopK, k = {config.topk_k} (ablation)", "none": "none: a dense baseline"}[config.activation]
    cap = math.exp(config.logit_scale_max)
    lines = [
        f"# {name}",
        "",
        f"A **Sparse CLIP** model ([Qin et al., ICLR 2026]({PAPER_URL})): CLIP with a ReLU after a very wide final",
        "projection in both towers, so every image and text embedding is a sparse, non-negative vector whose",
        "dimensions act as human-readable concepts. The loss is the plain symmetric CLIP loss; the cap on the",
        "learnable logit scale is the sparsity knob (lower cap, sparser embeddings).",
        "",
        "## Architecture and sparsity",
        "",
        "| | |",
        "|---|---|",
        f"| vision tower | {_tower_summary(config.vision_config)} ({config.vision_pooling} pooling) |",
        f"| text tower | {_tower_summary(config.text_config)} ({config.text_pooling} pooling) |",
        f"| embedding width | {width:,}{expansion} |",
        f"| activation | {activation} |",
        f"| logit-scale cap | {cap:.4g} (stored as log {config.logit_scale_max:.4f}) |",
        f"| logit-scale init | {math.exp(config.logit_scale_init_value):.4g} |",
    ]
    if facts.get("logit_scale_param") is not None:
        learned = math.exp(min(facts["logit_scale_param"], config.logit_scale_max))
        lines.append(f"| learned logit scale | {learned:.4g} |")
    if config.l1_coefficient:
        lines.append(f"| L1 coefficient | {config.l1_coefficient:g} (ablation) |")
    if facts.get("parameters"):
        lines.append(f"| parameters | {facts['parameters']:,} |")
    if base_model:
        lines.append(f"| converted / fine-tuned from | `{base_model}` |")
    for r in l0_rows:
        where = f" on {r.dataset}" if r.dataset != "given" else ""
        is_count = re.search(r"l0(_mean|_median)?$", r.metric, re.I) is not None
        share = f" ({100 * r.value / width:.3g}% of {width:,} dims)" if width and is_count else ""
        lines.append(f"| measured {r.metric}{where} | {_fmt(r.value)}{share} |")
    if not l0_rows:
        lines.append("| measured L0 | not measured for this checkpoint |")

    if eval_rows:
        lines += ["", "## Results", "", "| task | dataset | split | metric | value |", "|---|---|---|---|---|"]
        lines += [f"| {r.task} | {r.dataset} | {r.split or '-'} | {r.metric_name or r.metric} | {_fmt(r.value)} |" for r in eval_rows]
        lines += ["", "These numbers are also in the `model-index` metadata above (from the benchmark JSON in this repo)."]

    lines += [
        "",
        "## How to use",
        "",
        "Without this package, with transformers alone (the model code ships in this repo):",
        "",
        "```python",
        "import torch",
        "from PIL import Image",
        "from transformers import AutoModel, AutoProcessor",
        "",
        f'model = AutoModel.from_pretrained("{repo_ref}", trust_remote_code=True).eval()',
        f'processor = AutoProcessor.from_pretrained("{repo_ref}")',
        'inputs = processor(text=["a photo of a cat", "a photo of a dog"], images=Image.open("cat.png"),',
        '                   return_tensors="pt", padding=True)',
        "with torch.no_grad():",
        "    out = model(**inputs)",
        "print(out.logits_per_image.softmax(-1))        # zero-shot probabilities",
        "image_features = out.image_activations          # sparse, non-negative, un-normalised",
        "print((image_features != 0).sum(-1))            # L0: active concepts per image",
        "```",
        "",
        "With the `sparse-clip` package installed (`pip install sparse-clip`), no remote code is needed:",
        "",
        "```python",
        "from modeling_sparse_clip import SparseCLIPModel",
        "from transformers import AutoProcessor",
        "",
        f'model = SparseCLIPModel.from_pretrained("{repo_ref}")',
        f'processor = AutoProcessor.from_pretrained("{repo_ref}")',
        'features = model.get_image_features(**processor(images=image, return_tensors="pt")).pooler_output',
        "```",
        "",
        "`get_image_features` / `get_text_features` return the post-ReLU activations in `.pooler_output`;",
        "each non-zero dimension is a concept that the package's interpretability tools can name and steer.",
    ]
    if training:
        lines += ["", "## Training configuration", "", "```yaml", yaml.safe_dump(training, sort_keys=False).rstrip(), "```"]
    lines += [
        "",
        "## Citation",
        "",
        "```bibtex",
        "@inproceedings{qin2026sparseclip,",
        "  title     = {Sparse CLIP: Co-Optimizing Interpretability and Performance in Contrastive Learning},",
        "  author    = {Qin and Venhoff and Joseph and Xiao and Scherer},",
        "  booktitle = {International Conference on Learning Representations (ICLR)},",
        "  year      = {2026},",
        "  eprint    = {2601.20075},",
        "  archivePrefix = {arXiv}",
        "}",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(folder: str | os.PathLike, **kwargs) -> Path:
    """Build the card of `folder` and write it to `folder/README.md` (whole or not at all)."""
    path = Path(folder) / "README.md"
    card = build_model_card(folder, **kwargs)
    with atomic_file(path) as tmp:
        card.save(tmp)
    return path


__all__ = ["BenchmarkRow", "BenchmarkFormatError", "build_model_card", "parse_benchmark", "select_model_rows", "write_model_card"]

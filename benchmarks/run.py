"""Benchmark Sparse CLIP models, dense baselines and post-hoc SAEs side by side.

    python -m benchmarks.run --models outputs/dense outputs/sparse --sae outputs/sae_topk \
        --suite embedded --output_dir outputs/bench

Every model folder loads with `AutoModel`/`AutoProcessor`; every `--sae` folder names the dense model
it reads. For each evaluation set the runner embeds the images and texts once per model, then runs
the local `evaluate` metrics in `benchmarks/metrics/`: zero-shot accuracy or retrieval recall (on the
embeddings), sparsity, Clarity, modality score and label agreement (on the activations). It writes
`results.json` ({"models": {model: {set: {metric: value}}}, "meta": {...}}) and `results.md`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from .encode import ModelEncoder, SAEEncoder, sparse_rows
from .suites import build_suite

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


@dataclass
class BenchmarkArguments:
    models: list[str] = field(default_factory=list, metadata={"help": "Model folders (or NAME=FOLDER) to evaluate."})
    sae: list[str] = field(default_factory=list, metadata={"help": "Post-hoc SAE folders (or NAME=FOLDER); each names its dense model."})
    suite: str = field(default="embedded", metadata={"help": "embedded (the data package's held-out sets), paper (clip_benchmark Hub sets), or none."})
    zero_shot_datasets: list[str] = field(default_factory=list, metadata={"help": "Extra ImageNet-style sets: load_dataset ids or local paths."})
    retrieval_datasets: list[str] = field(default_factory=list, metadata={"help": "Extra COCO-style sets: load_dataset ids or local paths."})
    split: str = field(default="test", metadata={"help": "Split of the extra datasets."})
    max_examples: int | None = field(default=None, metadata={"help": "Evaluate at most this many images per set (seeded subsample)."})
    output_dir: str = field(default="outputs/bench")
    data_cache_dir: str = field(default=".cache/data", metadata={"help": "Where the data package builds/keeps the embedded sets."})
    vocabulary: str | None = field(default=None, metadata={"help": "Word list (one per line) for concept labels; default: the data package's vocabulary."})
    vocabulary_size: int | None = field(default=None, metadata={"help": "Use a seeded random subset of this many words (faster)."})
    interpretability: bool = field(default=True, metadata={"help": "Compute Clarity, modality and label agreement."})
    label_descriptions: str = field(default="ground_truth", metadata={"help": "What label agreement compares words with: ground_truth (captions / class names) or imagenet_classifier."})
    reference_image_encoder: str = field(default="efficientnet_lite0", metadata={"help": "Clarity's reference: efficientnet_lite0 (offline default) or a model folder/Hub id with get_image_features (e.g. a converted OpenAI CLIP, as in the paper)."})
    reference_image_size: int = field(default=224, metadata={"help": "Input size of the EfficientNet-Lite0 reference (native: 224)."})
    cache_dir: str = field(default=".cache/bench", metadata={"help": "Cache of reference embeddings (keyed by dataset fingerprint)."})
    tau: float = field(default=0.001, metadata={"help": "Activation threshold of Clarity and active features (paper: 0.001)."})
    n_min: int = field(default=2, metadata={"help": "Minimum images per feature for Clarity (paper: 2)."})
    batch_size: int = field(default=64)
    device: str | None = field(default=None)
    seed: int = field(default=0)
    progress: bool = field(default=True)


def load_metric(name: str):
    import evaluate

    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)


def _named(entry: str) -> tuple[str, str]:
    name, sep, path = entry.partition("=")
    return (name, path) if sep else (os.path.basename(os.path.normpath(entry)), entry)


def fill_template(template: str, class_name: str) -> str:
    return template.replace("{c}", "{}").format(class_name)


class ImageColumn:
    """A lazily decoded image column that slices like a list (so big sets are never all in memory)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.dataset[index]["image"]
        return self.dataset[int(index)]["image"]


class SetContext:
    """What every model shares on one evaluation set: texts, labels and the reference embeddings."""

    def __init__(self, eval_set, args: BenchmarkArguments, references: dict):
        self.eval_set = eval_set
        self.args = args
        self.references = references
        self.images = ImageColumn(eval_set.dataset)
        if eval_set.task == "zero_shot":
            self.labels = np.asarray(eval_set.dataset["label"], np.int64)
            self.templates = list(eval_set.templates or ["a photo of a {}."])
            self.texts = [fill_template(t, c) for c in eval_set.class_names for t in self.templates]
            # The text paired with image n (for the modality score): its class in the first template.
            self.paired_text_rows = self.labels * len(self.templates)
        elif eval_set.task == "retrieval":
            captions = eval_set.dataset["text"]
            self.caption_counts = np.array([len(c) for c in captions])
            self.texts = [c for image_captions in captions for c in image_captions]
            self.paired_text_rows = np.concatenate([[0], np.cumsum(self.caption_counts)[:-1]]).astype(np.int64)
        else:
            raise ValueError(f"Evaluation set {eval_set.name!r} has unknown task {eval_set.task!r}.")
        self._reference_images = None
        self._descriptions = None

    def reference_image_embeddings(self) -> np.ndarray:
        """The reference encoder's embeddings of the set's images, cached on disk by dataset fingerprint."""
        if self._reference_images is None:
            reference = self.references["image"]
            key = hashlib.sha256(f"{self.eval_set.dataset._fingerprint}|{reference.name}".encode()).hexdigest()[:16]
            path = Path(self.args.cache_dir) / "reference_images" / f"{self.eval_set.name}-{key}.npy"
            if path.exists():
                self._reference_images = np.load(path)
            else:
                self._reference_images = reference.embed_images(self.images)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, self._reference_images)
        return self._reference_images

    def description_embeddings(self) -> np.ndarray:
        """Each image in the reference text space: its ground-truth text, or the reference classifier's labels."""
        if self._descriptions is None:
            text_reference = self.references["text"]
            if self.args.label_descriptions == "imagenet_classifier":
                from .reference import imagenet_label_embeddings

                self._descriptions = self.references["image"].classify_images(self.images) @ imagenet_label_embeddings(text_reference)
            elif self.eval_set.task == "zero_shot":
                self._descriptions = text_reference.embed_texts(self.eval_set.class_names)[self.labels]
            else:
                caption_embeddings = text_reference.embed_texts(self.texts)
                owner = np.repeat(np.arange(len(self.caption_counts)), self.caption_counts)
                sums = np.zeros((len(self.caption_counts), caption_embeddings.shape[1]))
                np.add.at(sums, owner, caption_embeddings)
                self._descriptions = sums / self.caption_counts[:, None]
        return self._descriptions


def _prefixed(prefix: str, result: dict, keys: dict[str, str]) -> dict:
    return {f"{prefix}{new}": result[old] for old, new in keys.items() if old in result}


def evaluate_on_set(encoder, context: SetContext, vocabulary: dict | None, args: BenchmarkArguments) -> dict:
    """All metrics of one model (or dense model + SAE) on one evaluation set."""
    eval_set = context.eval_set
    image_acts, image_embeds = encoder.encode_images(context.images, desc=eval_set.name)
    text_acts, text_embeds = encoder.encode_texts(context.texts, desc=eval_set.name)
    image_indices, image_values = sparse_rows(image_embeds)
    out: dict = {"num_images": int(image_acts.shape[0])}

    if eval_set.task == "zero_shot":
        per_class = [text_embeds[k * len(context.templates) : (k + 1) * len(context.templates)] for k in range(len(eval_set.class_names))]
        result = load_metric("zero_shot_accuracy").compute(
            image_indices=image_indices, image_values=image_values, labels=context.labels, class_embeddings=per_class
        )
        out.update(_prefixed("", result, {"top1_accuracy": "top1_accuracy", "top5_accuracy": "top5_accuracy", "mean_per_class_top1": "mean_per_class_top1"}))
    else:
        text_indices, text_values = sparse_rows(text_embeds)
        bounds = np.concatenate([[0], np.cumsum(context.caption_counts)])
        result = load_metric("retrieval_recall").compute(
            image_indices=image_indices,
            image_values=image_values,
            text_indices=[text_indices[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
            text_values=[text_values[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
            width=image_embeds.shape[1],
        )
        out.update({k: v for k, v in result.items() if "_R@" in k})

    sparsity = load_metric("sparsity")
    keys = {"l0_mean": "l0_mean", "l0_median": "l0_median", "l0_percent_of_width": "l0_percent_of_width",
            "active_features_percent": "active_features_percent", "dead_features": "dead_features"}
    for prefix, acts in (("image_", image_acts), ("text_", text_acts)):
        indices, values = sparse_rows(acts)
        result = sparsity.compute(active_indices=indices, active_values=values, width=encoder.width, tau=args.tau)
        out.update(_prefixed(prefix, result, keys))
    out["width"] = int(encoder.width)
    if not args.interpretability:
        return out

    act_indices, act_values = sparse_rows(image_acts)
    result = load_metric("clarity").compute(
        active_indices=act_indices, active_values=act_values, reference_embeddings=context.reference_image_embeddings(),
        tau=args.tau, n_min=args.n_min, width=encoder.width, seed=args.seed,
    )
    out.update(_prefixed("", result, {"clarity": "clarity", "random_baseline_clarity": "clarity_random_baseline",
                                      "num_active_features": "clarity_active_features",
                                      "active_features_percent": "clarity_active_features_percent"}))

    paired_indices, paired_values = sparse_rows(text_acts[context.paired_text_rows])
    result = load_metric("modality_score").compute(
        image_indices=act_indices, image_values=act_values, text_indices=paired_indices, text_values=paired_values, width=encoder.width
    )
    out.update(_prefixed("", result, {"multimodal_fraction": "multimodal_fraction", "multimodal_density_fraction": "multimodal_density_fraction",
                                      "mean_score": "mean_modality_score", "image_only_fraction": "image_only_fraction",
                                      "text_only_fraction": "text_only_fraction", "score_histogram": "modality_histogram"}))

    if vocabulary is not None:
        result = load_metric("label_agreement").compute(
            image_indices=act_indices, image_values=act_values, image_reference_embeddings=context.description_embeddings(),
            word_activations=vocabulary["activations"][encoder.name], word_embeddings=vocabulary["embeddings"],
            words=vocabulary["words"], tau=args.tau, n_min=args.n_min, seed=args.seed,
        )
        out.update(_prefixed("", result, {"label_agreement": "label_agreement", "label_top1": "label_top1", "top1_chance": "label_top1_chance", "label_specificity": "label_specificity",
                                          "top_word_similarity": "top_word_similarity", "random_word_similarity": "random_word_similarity",
                                          "num_labelled_features": "labelled_features", "examples": "label_examples"}))
    return out


def load_vocabulary(args: BenchmarkArguments) -> list[str] | None:
    if args.vocabulary:
        words = [w.strip() for w in open(args.vocabulary) if w.strip()]
    else:
        try:
            from modeling_sparse_clip.data import load_vocabulary as load_package_vocabulary
        except ImportError:
            return None
        words = load_package_vocabulary(os.path.join(args.data_cache_dir, "vocabulary.txt"))
    if args.vocabulary_size and args.vocabulary_size < len(words):
        words = sorted(random.Random(args.seed).sample(list(words), args.vocabulary_size))
    return list(words)


# -- reporting ---------------------------------------------------------------------------------------
SUMMARY_METRICS = [
    ("top1_accuracy", "zero-shot top-1"),
    ("text_to_image_R@1", "text->image R@1"),
    ("image_to_text_R@1", "image->text R@1"),
    ("image_l0_mean", "image L0"),
    ("image_l0_percent_of_width", "image L0 % of width"),
    ("clarity_active_features_percent", "active features % (Clarity)"),
    ("clarity", "Clarity"),
    ("clarity_random_baseline", "Clarity, random images"),
    ("multimodal_fraction", "multimodal fraction"),
    ("label_agreement", "label agreement (vs random words)"),
    ("label_specificity", "label specificity (vs other features' images)"),
]


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else (f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}")
    return ""


def summarize(results: dict) -> dict:
    """Per model, the mean of each summary metric over the sets that have it."""
    summary = {}
    for model, sets in results.items():
        summary[model] = {}
        for key, _ in SUMMARY_METRICS:
            values = [m[key] for m in sets.values() if isinstance(m.get(key), (int, float)) and not math.isnan(m[key])]
            if values:
                summary[model][key] = float(np.mean(values))
    return summary


def write_markdown(results: dict, meta: dict, path: Path) -> None:
    models = list(results)
    lines = ["# Benchmark results", "", f"Suite: `{meta['suite']}`; reference image encoder for Clarity: {meta['reference_image_encoder']}.", ""]
    lines += ["## Summary (mean over sets)", "", "| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    summary = summarize(results)
    for key, label in SUMMARY_METRICS:
        if any(key in summary[m] for m in models):
            lines.append(f"| {label} | " + " | ".join(_fmt(summary[m].get(key)) for m in models) + " |")
    set_names = list(dict.fromkeys(s for m in models for s in results[m]))
    for set_name in set_names:
        lines += ["", f"## {set_name}", "", "| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        keys = list(dict.fromkeys(k for m in models for k, v in results[m].get(set_name, {}).items() if _fmt(v)))
        for key in keys:
            lines.append(f"| {key} | " + " | ".join(_fmt(results[m].get(set_name, {}).get(key)) for m in models) + " |")
    path.write_text("\n".join(lines) + "\n")


def run(args: BenchmarkArguments) -> dict:
    if not args.models and not args.sae:
        raise ValueError("Nothing to evaluate: pass --models DIR [DIR ...] and/or --sae DIR [DIR ...].")
    if args.label_descriptions not in ("ground_truth", "imagenet_classifier"):
        raise ValueError(f"--label_descriptions must be ground_truth or imagenet_classifier, not {args.label_descriptions!r}.")
    started = time.time()
    eval_sets = build_suite(args.suite, args.zero_shot_datasets, args.retrieval_datasets, args.split, args.data_cache_dir, args.max_examples)
    kwargs = dict(batch_size=args.batch_size, device=args.device, progress=args.progress)
    entries = [("model", *_named(e)) for e in args.models] + [("sae", *_named(e)) for e in args.sae]
    names = [name for _, name, _ in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"Two entries share a name ({names}); name them with NAME=FOLDER.")

    references = {}
    vocabulary = None
    if args.interpretability:
        from .reference import MiniLMTextReference, image_reference

        references = {
            "image": image_reference(args.reference_image_encoder, **kwargs, image_size=args.reference_image_size),
            "text": MiniLMTextReference(device=args.device, progress=args.progress, cache_dir=args.cache_dir),
        }
        words = load_vocabulary(args)
        if words is not None:
            vocabulary = {"words": words, "embeddings": references["text"].embed_texts(words, cache=True), "activations": {}}
    contexts = [SetContext(s, args, references) for s in eval_sets]

    results, timings = {}, {}
    bar = tqdm(total=len(entries) * len(contexts), desc="benchmark", disable=not args.progress)
    for kind, name, path in entries:
        model_started = time.time()
        encoder = (ModelEncoder if kind == "model" else SAEEncoder).from_pretrained(path, name=name, **kwargs)
        if vocabulary is not None:  # the model's own text tower over the vocabulary, once per model
            vocabulary["activations"][name] = encoder.encode_texts(vocabulary["words"], desc="vocabulary")[0]
        results[name] = {}
        for context in contexts:
            bar.set_postfix(model=name, set=context.eval_set.name)
            results[name][context.eval_set.name] = evaluate_on_set(encoder, context, vocabulary, args)
            bar.update()
        timings[name] = round(time.time() - model_started, 2)
        if vocabulary is not None:
            vocabulary["activations"].pop(name)
        del encoder
    bar.close()

    meta = {
        "suite": args.suite,
        "sets": {c.eval_set.name: {"task": c.eval_set.task, "num_images": len(c.images), "num_texts": len(c.texts)} for c in contexts},
        "entries": {name: {"kind": kind, "path": path} for kind, name, path in entries},
        "reference_image_encoder": references["image"].name if references else None,
        "reference_text_encoder": references["text"].name if references else None,
        "vocabulary_size": len(vocabulary["words"]) if vocabulary else None,
        "arguments": asdict(args),
        "seconds_per_entry": timings,
        "seconds_total": round(time.time() - started, 2),
        "summary": summarize(results),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_threads": __import__("torch").get_num_threads(),
    }
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = {"models": results, "meta": meta}
    (output_dir / "results.json").write_text(json.dumps(report, indent=2, default=_json_default))
    write_markdown(results, meta, output_dir / "results.md")
    return report


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    report = run(args)
    print(Path(args.output_dir) / "results.md")
    print((Path(args.output_dir) / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

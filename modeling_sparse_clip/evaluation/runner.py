"""Benchmark Sparse CLIP models, dense baselines and post-hoc SAEs side by side (big_vision style:
small task modules under one loop).

    report = run(BenchmarkArguments(models=["sparse=outputs/sparse", "dense=outputs/dense"], suite="embedded"))

Every model folder loads with `AutoModel`/`AutoProcessor`; every `sae` folder names the dense model it
reads. For each evaluation set of the suite the runner embeds the images and texts once per model with
the one encoder (`SparseCLIPEncoder`; an SAE reads its outputs, `SAEReading`), then runs the tasks:
zero-shot accuracy or retrieval recall (on the embeddings), sparsity, Clarity, modality score and label
agreement (on the activations). It writes `results.json` ({"models": {model: {set: {metric: value}}},
"meta": {...}}) and `results.md`.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..caching import TensorCache, fingerprint
from ..constants import BENCH_CACHE_DIR, DATA_CACHE_DIR, FEATURE_CACHE_DIR
from ..data.eval_sets import EvalSet
from ..encoding import SparseCLIPEncoder
from ..sparse_embeddings import SparseEmbeddings
from . import clarity, labels, modality, retrieval, sparsity, zero_shot
from .report import summarize, write_report
from .sae_reading import SAEReading, read_images, read_texts
from .suites import ImageColumn, build_suite
from .zero_shot import fill_template


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
    data_cache_dir: str = field(default=str(DATA_CACHE_DIR), metadata={"help": "Where the data package builds/keeps the embedded sets."})
    vocabulary: str | None = field(default=None, metadata={"help": "Word list (one per line) for concept labels; default: the data package's vocabulary."})
    vocabulary_size: int | None = field(default=None, metadata={"help": "Use a seeded random subset of this many words (faster)."})
    interpretability: bool = field(default=True, metadata={"help": "Compute Clarity, modality and label agreement."})
    label_descriptions: str = field(default="ground_truth", metadata={"help": "What label agreement compares words with: ground_truth (captions / class names) or imagenet_classifier."})
    reference_image_encoder: str = field(default="efficientnet_lite0", metadata={"help": "Clarity's reference: efficientnet_lite0 (offline default) or a model folder/Hub id with get_image_features (e.g. a converted OpenAI CLIP, as in the paper)."})
    reference_image_size: int = field(default=224, metadata={"help": "Input size of the EfficientNet-Lite0 reference (native: 224)."})
    cache_dir: str = field(default=str(BENCH_CACHE_DIR), metadata={"help": "Cache of reference embeddings (keyed by dataset fingerprint)."})
    tower_cache_dir: str = field(default=str(FEATURE_CACHE_DIR), metadata={"help": "Shared cache of pooled tower outputs, keyed by tower fingerprint + input set: models and SAEs on the same frozen towers run them once ('' turns it off)."})
    concept_labels: bool = field(default=True, metadata={"help": "Compute label agreement (needs the model's text tower over the vocabulary)."})
    channels_last: bool = field(default=True, metadata={"help": "Run convolutional image towers channels-last (about 2x faster on CPU)."})
    tau: float = field(default=0.001, metadata={"help": "Activation threshold of Clarity and active features (paper: 0.001)."})
    n_min: int = field(default=2, metadata={"help": "Minimum images per feature for Clarity (paper: 2)."})
    batch_size: int = field(default=64)
    device: str | None = field(default=None)
    seed: int = field(default=0)
    progress: bool = field(default=True)


def _named(entry: str) -> tuple[str, str]:
    name, sep, path = entry.partition("=")
    return (name, path) if sep else (os.path.basename(os.path.normpath(entry)), entry)


def _select_rows(embeddings: SparseEmbeddings, rows: np.ndarray) -> SparseEmbeddings:
    return SparseEmbeddings.from_scipy(embeddings.to_scipy()[rows])


class SetContext:
    """What every model shares on one evaluation set: texts, labels and the reference embeddings."""

    def __init__(self, eval_set: EvalSet, args: BenchmarkArguments, references: dict):
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
        # What the encoder's tower cache (when it has one) keys these inputs by.
        self.image_key = fingerprint(eval_set.dataset)
        self.text_key = fingerprint(self.texts)
        self._reference_images = None
        self._descriptions = None

    def reference_image_embeddings(self) -> np.ndarray:
        """The reference encoder's embeddings of the set's images, cached by dataset fingerprint."""
        if self._reference_images is None:
            reference = self.references["image"]
            key = fingerprint(self.eval_set.dataset, reference.name)
            tensors = TensorCache(self.args.cache_dir).get_or_compute(
                "reference_images", key, lambda: {"embeddings": torch.from_numpy(reference.embed_images(self.images))},
                {"set": self.eval_set.name, "reference": reference.name},
            )
            self._reference_images = tensors["embeddings"].numpy()
        return self._reference_images

    def description_embeddings(self) -> np.ndarray:
        """Each image in the reference text space (float32, as the reference encoder gives): its
        ground-truth text (the mean over its captions), or the reference classifier's labels."""
        if self._descriptions is None:
            text_reference = self.references["text"]
            if self.args.label_descriptions == "imagenet_classifier":
                from .reference import imagenet_label_embeddings

                descriptions = self.references["image"].classify_images(self.images) @ imagenet_label_embeddings(text_reference)
            elif self.eval_set.task == "zero_shot":
                descriptions = text_reference.embed_texts(self.eval_set.class_names)[self.labels]
            else:
                caption_embeddings = text_reference.embed_texts(self.texts)
                owner = np.repeat(np.arange(len(self.caption_counts)), self.caption_counts)
                sums = np.zeros((len(self.caption_counts), caption_embeddings.shape[1]))
                np.add.at(sums, owner, caption_embeddings)
                descriptions = sums / self.caption_counts[:, None]
            self._descriptions = descriptions.astype(np.float32)
        return self._descriptions


def _prefixed(prefix: str, result: dict, keys: dict[str, str]) -> dict:
    return {f"{prefix}{new}": result[old] for old, new in keys.items() if old in result}


SPARSITY_KEYS = {"l0_mean": "l0_mean", "l0_median": "l0_median", "l0_percent_of_width": "l0_percent_of_width",
                 "active_features_percent": "active_features_percent", "dead_features": "dead_features"}
CLARITY_KEYS = {"clarity": "clarity", "random_baseline_clarity": "clarity_random_baseline", "num_active_features": "clarity_active_features",
                "active_features_percent": "clarity_active_features_percent"}
MODALITY_KEYS = {"multimodal_fraction": "multimodal_fraction", "multimodal_density_fraction": "multimodal_density_fraction",
                 "mean_score": "mean_modality_score", "image_only_fraction": "image_only_fraction",
                 "text_only_fraction": "text_only_fraction", "score_histogram": "modality_histogram"}
LABEL_KEYS = {"label_agreement": "label_agreement", "label_top1": "label_top1", "top1_chance": "label_top1_chance",
              "label_specificity": "label_specificity", "top_word_similarity": "top_word_similarity",
              "random_word_similarity": "random_word_similarity", "num_labelled_features": "labelled_features", "examples": "label_examples"}


def evaluate_on_set(encoder: SparseCLIPEncoder | SAEReading, context: SetContext, vocabulary: dict | None, args: BenchmarkArguments) -> dict:
    """All tasks of one model (or dense model + SAE) on one evaluation set. `vocabulary`: {"words",
    "embeddings" (reference), "activations": {model name: the model's activations of the words}} or None."""
    eval_set = context.eval_set
    image_acts, image_embeds = read_images(encoder, context.images, cache_key=context.image_key, desc=eval_set.name)
    text_acts, text_embeds = read_texts(encoder, context.texts, cache_key=context.text_key, desc=eval_set.name)
    out: dict = {"num_images": len(image_acts)}

    if eval_set.task == "zero_shot":
        per_class = zero_shot.split_prompts(text_embeds, len(context.templates))
        result = zero_shot.evaluate(image_embeds, per_class, context.labels)
        out.update({k: result[k] for k in ("top1_accuracy", "top5_accuracy", "mean_per_class_top1")})
    else:
        result = retrieval.evaluate(image_embeds, text_embeds, context.caption_counts)
        out.update({k: v for k, v in result.items() if "_R@" in k})

    for prefix, acts in (("image_", image_acts), ("text_", text_acts)):
        out.update(_prefixed(prefix, sparsity.evaluate(acts, tau=args.tau), SPARSITY_KEYS))
    out["width"] = int(encoder.width)
    if not args.interpretability:
        return out

    result = clarity.evaluate(image_acts, context.reference_image_embeddings(), tau=args.tau, n_min=args.n_min, seed=args.seed)
    out.update(_prefixed("", result, CLARITY_KEYS))
    result = modality.evaluate(image_acts, _select_rows(text_acts, context.paired_text_rows))
    out.update(_prefixed("", result, MODALITY_KEYS))
    if vocabulary is not None:
        result = labels.evaluate(
            image_acts, context.description_embeddings(), vocabulary["activations"][encoder.name], vocabulary["embeddings"],
            words=vocabulary["words"], tau=args.tau, n_min=args.n_min, seed=args.seed,
        )
        out.update(_prefixed("", result, LABEL_KEYS))
    return out


def load_vocabulary(args: BenchmarkArguments) -> list[str]:
    """The concept-label vocabulary: `args.vocabulary` (one word a line) or the data package's, then
    a seeded subset of `args.vocabulary_size` words."""
    if args.vocabulary:
        with open(args.vocabulary) as f:
            words = [w.strip() for w in f if w.strip()]
    else:
        from ..data import load_vocabulary as load_package_vocabulary

        words = load_package_vocabulary(os.path.join(args.data_cache_dir, "vocabulary.txt"))
    if args.vocabulary_size and args.vocabulary_size < len(words):
        words = sorted(random.Random(args.seed).sample(list(words), args.vocabulary_size))
    return list(words)


def run(args: BenchmarkArguments) -> dict:
    """Evaluate every model and SAE of `args` on its suite; writes results.json and results.md to
    `args.output_dir` and returns the report ({"models": ..., "meta": ...})."""
    if not args.models and not args.sae:
        raise ValueError("Nothing to evaluate: pass --models DIR [DIR ...] and/or --sae DIR [DIR ...].")
    if args.label_descriptions not in ("ground_truth", "imagenet_classifier"):
        raise ValueError(f"--label_descriptions must be ground_truth or imagenet_classifier, not {args.label_descriptions!r}.")
    started = time.time()
    eval_sets = build_suite(args.suite, args.zero_shot_datasets, args.retrieval_datasets, args.split, args.data_cache_dir, args.max_examples)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = dict(batch_size=args.batch_size, device=device, progress=args.progress)
    # every model and SAE on the same frozen towers reads one pooled-output cache: towers run once per input set
    encoder_kwargs = dict(kwargs, cache_dir=args.tower_cache_dir or None, channels_last=args.channels_last)
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
            "text": MiniLMTextReference(device=device, progress=args.progress, cache_dir=args.cache_dir),
        }
    if args.interpretability and args.concept_labels:
        words = load_vocabulary(args)
        vocabulary = {"words": words, "key": fingerprint(words), "embeddings": references["text"].embed_texts(words, cache=True), "activations": {}}
    contexts = [SetContext(s, args, references) for s in eval_sets]

    results, timings = {}, {}
    bar = tqdm(total=len(entries) * len(contexts), desc="benchmark", disable=not args.progress)
    for kind, name, path in entries:
        model_started = time.time()
        if kind == "model":
            encoder = SparseCLIPEncoder.from_pretrained(path, name=name, **encoder_kwargs)
        else:
            encoder = SAEReading.from_pretrained(path, name=name, **encoder_kwargs)
        if vocabulary is not None:  # the model's own text tower over the vocabulary, once per model
            vocabulary["activations"][name] = read_texts(encoder, vocabulary["words"], cache_key=vocabulary["key"], desc="vocabulary")[0]
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
        "cpu_threads": torch.get_num_threads(),
    }
    report = {"models": results, "meta": meta}
    write_report(report, args.output_dir)
    return report


__all__ = ["BenchmarkArguments", "SetContext", "evaluate_on_set", "load_vocabulary", "run"]

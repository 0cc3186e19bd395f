"""Evaluation suites: which evaluation sets a run covers, all as `modeling_sparse_clip.data.EvalSet`.

* `embedded`: the held-out evaluation sets built by the data package (`modeling_sparse_clip.data`).
* `paper`: the paper's 12 zero-shot classification sets (6 general, 6 fine-grained) and COCO
  retrieval, as clip_benchmark's Hub datasets. They cannot download on a machine without a
  network: loading fails with a message that says how to point the runner at a local copy.
* any `load_dataset` id or local path, clip_benchmark-style: ImageNet-style zero-shot (an image
  column and an integer label column with ClassLabel names or a `classnames.txt`) and COCO-style
  retrieval (an image column and a column of captions: a list of strings or newline-separated text).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets

from ..constants import DATA_CACHE_DIR
from ..data.eval_sets import EvalSet

IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_COLUMNS = ("label", "labels", "cls", "class")
CAPTION_COLUMNS = ("text", "captions", "caption", "txt", "sentences")
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"


@dataclass
class HubTask:
    name: str
    task: str
    path: str
    split: str = "test"
    group: str = ""


PAPER_SUITE = [
    HubTask("imagenet1k", "zero_shot", "clip-benchmark/wds_imagenet1k", group="general"),
    HubTask("imagenetv2", "zero_shot", "clip-benchmark/wds_imagenetv2", group="general"),
    HubTask("objectnet", "zero_shot", "clip-benchmark/wds_objectnet", group="general"),
    HubTask("imagenet-a", "zero_shot", "clip-benchmark/wds_imagenet-a", group="general"),
    HubTask("imagenet-r", "zero_shot", "clip-benchmark/wds_imagenet-r", group="general"),
    HubTask("imagenet_sketch", "zero_shot", "clip-benchmark/wds_imagenet_sketch", group="general"),
    HubTask("food101", "zero_shot", "clip-benchmark/wds_food101", group="fine_grained"),
    HubTask("flowers", "zero_shot", "clip-benchmark/wds_vtab-flowers", group="fine_grained"),
    HubTask("pets", "zero_shot", "clip-benchmark/wds_vtab-pets", group="fine_grained"),
    HubTask("cars", "zero_shot", "clip-benchmark/wds_cars", group="fine_grained"),
    HubTask("fgvc_aircraft", "zero_shot", "clip-benchmark/wds_fgvc_aircraft", group="fine_grained"),
    HubTask("sun397", "zero_shot", "clip-benchmark/wds_sun397", group="fine_grained"),
    HubTask("mscoco", "retrieval", "clip-benchmark/wds_mscoco_captions", group="retrieval"),
]


def default_templates() -> list[str]:
    """OpenAI's 80 ImageNet prompt templates (from open_clip), as "{}" format strings."""
    try:
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    except ImportError:
        return ["a photo of a {}."]
    return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]


def _pick(columns: list[str], candidates: tuple[str, ...], what: str, path: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(f"{path} has no {what} column (looked for {candidates}; it has {columns}). Rename the column.")


def _read_lines(path: str, filename: str) -> list[str] | None:
    """A text file next to a local dataset, or in its Hub dataset repository."""
    if os.path.isdir(path):
        local = os.path.join(path, filename)
        return [l.strip() for l in open(local) if l.strip()] if os.path.isfile(local) else None
    try:
        from huggingface_hub import hf_hub_download

        with open(hf_hub_download(path, filename, repo_type="dataset")) as f:
            return [l.strip() for l in f if l.strip()]
    except Exception:
        return None


def _load(path: str, split: str) -> datasets.Dataset:
    try:
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "dataset_info.json")):
            loaded = datasets.load_from_disk(path)
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        return datasets.load_dataset(path, split=split)
    except Exception as error:
        raise RuntimeError(
            f"Could not load the evaluation set {path!r} (split {split!r}): {type(error).__name__}: {error}\n"
            "Hub datasets need a network. On an offline machine, download the set elsewhere "
            "(`datasets.load_dataset(...).save_to_disk(DIR)`), copy DIR here and pass it with "
            "--zero_shot_datasets DIR or --retrieval_datasets DIR."
        ) from error


def load_zero_shot(path: str, split: str = "test", name: str | None = None, max_examples: int | None = None) -> EvalSet:
    dataset = _load(path, split)
    image_column = _pick(dataset.column_names, IMAGE_COLUMNS, "image", path)
    label_column = _pick(dataset.column_names, LABEL_COLUMNS, "label", path)
    label_feature = dataset.features[label_column]
    class_names = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else _read_lines(path, CLASSNAMES_FILE)
    if not class_names:
        raise ValueError(f"{path}: the label column is not a ClassLabel and there is no {CLASSNAMES_FILE}; cannot name the classes.")
    templates = _read_lines(path, TEMPLATES_FILE) or default_templates()
    renames = {old: new for old, new in ((image_column, "image"), (label_column, "label")) if old != new}
    dataset = dataset.select_columns([image_column, label_column]).rename_columns(renames)
    if max_examples:
        dataset = dataset.shuffle(seed=0).select(range(min(max_examples, len(dataset))))
    return EvalSet(name or _name(path), "zero_shot", dataset, list(class_names), templates)


def load_retrieval(path: str, split: str = "test", name: str | None = None, max_examples: int | None = None) -> EvalSet:
    dataset = _load(path, split)
    image_column = _pick(dataset.column_names, IMAGE_COLUMNS, "image", path)
    caption_column = _pick(dataset.column_names, CAPTION_COLUMNS, "caption", path)
    dataset = dataset.select_columns([image_column, caption_column])
    if max_examples:
        dataset = dataset.shuffle(seed=0).select(range(min(max_examples, len(dataset))))

    def as_list(batch):  # clip_benchmark's wds sets store the captions as one newline-separated string
        return {"text": [c if isinstance(c, list) else [s for s in str(c).split("\n") if s.strip()] for c in batch[caption_column]]}

    dataset = dataset.map(lambda b: {"_captions": as_list(b)["text"]}, batched=True, remove_columns=[caption_column])
    dataset = dataset.rename_columns({"_captions": "text", **({image_column: "image"} if image_column != "image" else {})})
    return EvalSet(name or _name(path), "retrieval", dataset)


def _name(path: str) -> str:
    return os.path.basename(os.path.normpath(path)).removeprefix("wds_")


def embedded_suite(cache_dir: str | os.PathLike = DATA_CACHE_DIR, max_examples: int | None = None) -> list[EvalSet]:
    """The data package's held-out sets (built on first use)."""
    from .. import data  # looked up at call time, so a test can substitute the sets

    eval_sets = list(data.load_eval_sets(cache_dir=cache_dir).values())
    if max_examples:
        for eval_set in eval_sets:
            eval_set.dataset = eval_set.dataset.shuffle(seed=0).select(range(min(max_examples, len(eval_set.dataset))))
    return eval_sets


def paper_suite(max_examples: int | None = None) -> list[EvalSet]:
    loader = {"zero_shot": load_zero_shot, "retrieval": load_retrieval}
    return [loader[t.task](t.path, t.split, name=t.name, max_examples=max_examples) for t in PAPER_SUITE]


def build_suite(
    suite: str = "embedded",
    zero_shot_datasets: list[str] = (),
    retrieval_datasets: list[str] = (),
    split: str = "test",
    cache_dir: str | os.PathLike = DATA_CACHE_DIR,
    max_examples: int | None = None,
) -> list[EvalSet]:
    """The evaluation sets of a named suite (`embedded`, `paper` or `none`) plus any extra datasets."""
    if suite == "embedded":
        eval_sets = embedded_suite(cache_dir, max_examples)
    elif suite == "paper":
        eval_sets = paper_suite(max_examples)
    elif suite == "none":
        eval_sets = []
    else:
        raise ValueError(f"Unknown suite {suite!r}; use embedded, paper or none (and/or --zero_shot_datasets/--retrieval_datasets).")
    eval_sets += [load_zero_shot(p, split, max_examples=max_examples) for p in zero_shot_datasets]
    eval_sets += [load_retrieval(p, split, max_examples=max_examples) for p in retrieval_datasets]
    if not eval_sets:
        raise ValueError("No evaluation sets: pick a suite or pass --zero_shot_datasets / --retrieval_datasets.")
    return eval_sets


class ImageColumn:
    """A dataset's lazily decoded `image` column that slices like a list (big sets never sit in memory whole)."""

    def __init__(self, dataset: datasets.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.dataset[index]["image"]
        return self.dataset[int(index)]["image"]


__all__ = ["EvalSet", "HubTask", "PAPER_SUITE", "ImageColumn", "build_suite", "embedded_suite", "paper_suite",
           "load_zero_shot", "load_retrieval", "default_templates"]

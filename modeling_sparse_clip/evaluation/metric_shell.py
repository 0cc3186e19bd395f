"""The base of the `evaluate` metric shells in `metrics/<name>/<name>.py`.

A shell declares its input columns and its task module; this class builds `evaluate`'s `MetricInfo`
from them and hands `_compute` numpy arrays (evaluate only accepts the "numpy" format for scalar
features at construction, so it is set after; datasets' numpy formatter handles list columns fine).
"""

from __future__ import annotations

from types import ModuleType

import datasets
import evaluate

SPARSE_CLIP_CITATION = """
@inproceedings{qin2026sparseclip, title={Sparse CLIP: Co-Optimizing Interpretability and Performance in Contrastive Learning},
  author={Qin, Chuan and Venhoff, Constantin and Joseph, Sonia and Xiao, Fanyi and Scherer, Stefan}, booktitle={ICLR}, year={2026}}
"""


def sparse_rows(prefix: str, nested: bool = False) -> dict:
    """Input columns `<prefix>_indices` / `<prefix>_values`: per input, its non-zero features (per image,
    a list of such rows when `nested`, e.g. several captions)."""
    def column(dtype):
        feature = datasets.Sequence(datasets.Value(dtype))
        return datasets.Sequence(feature) if nested else feature

    return {f"{prefix}_indices": column("int32"), f"{prefix}_values": column("float32")}


def dense_rows(name: str) -> dict:
    """An input column of one float vector per input (e.g. reference embeddings)."""
    return {name: datasets.Sequence(datasets.Value("float32"))}


class SparseMetric(evaluate.Metric):
    """Shell over a task module of `modeling_sparse_clip.evaluation`: set `task`, `inputs`, `inputs_description`."""

    task: ModuleType
    inputs: dict = {}
    inputs_description: str = ""
    citation: str = SPARSE_CLIP_CITATION

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.info.format = "numpy"

    def _info(self):
        return evaluate.MetricInfo(
            description=self.task.__doc__,
            citation=self.citation,
            inputs_description=self.inputs_description,
            features=datasets.Features(self.inputs),
        )

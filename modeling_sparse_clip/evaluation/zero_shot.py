"""Zero-shot classification (Radford et al. 2021) from image embeddings and class prompt embeddings.

Each class k has T_k prompt embeddings e_{k,t} (the class name in templates such as
"a photo of a {}."). As CLIP does, the class vector is the renormalised mean of the normalised
prompt embeddings:  c_k = normalize( mean_t normalize(e_{k,t}) ).
Each image x_i scores  s_{i,k} = normalize(x_i) . c_k.
The rank of the true class y_i is  r_i = #{k != y_i : s_{i,k} >= s_{i,y_i}}  (ties count AGAINST
the image, so an all-zero embedding, which ties every class, is never correct by luck).
    top-k accuracy       = mean_i [ r_i < k ]
    mean per-class top-1 = mean_k ( mean_{i : y_i = k} [ r_i < 1 ] )   (balanced accuracy)

`ZeroShotClassifier` is the same prompt ensemble as a classifier of single images (the Space and
steering use it).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..sparse_embeddings import SparseEmbeddings
from .cosine import float64_csr, unit_rows


def fill_template(template: str, class_name: str) -> str:
    """A prompt: the class name in a template written with `{}` (or clip_benchmark's `{c}`)."""
    return template.replace("{c}", "{}").format(class_name)


def class_vectors(prompt_embeddings: Sequence[SparseEmbeddings]) -> np.ndarray:
    """CLIP's prompt ensembling: c_k = normalize(mean_t normalize(e_{k,t})), one batch of prompt
    embeddings per class (any number of prompts each) -> a dense float64 [C, D] array."""
    if not len(prompt_embeddings):
        raise ValueError("Zero-shot classification needs at least one class.")
    vectors = [np.asarray(unit_rows(prompts.to_scipy()).mean(axis=0)).ravel() for prompts in prompt_embeddings]
    return unit_rows(np.stack(vectors))


def split_prompts(prompt_embeddings: SparseEmbeddings, prompts_per_class: int) -> list[SparseEmbeddings]:
    """Class-major prompt rows (class 0's templates, then class 1's, ...) -> one batch per class."""
    if prompts_per_class < 1 or len(prompt_embeddings) % prompts_per_class:
        raise ValueError(f"{len(prompt_embeddings)} prompt rows do not split into classes of {prompts_per_class}.")
    return [prompt_embeddings[s : s + prompts_per_class] for s in range(0, len(prompt_embeddings), prompts_per_class)]


def evaluate(
    image_embeddings: SparseEmbeddings,
    class_prompt_embeddings: Sequence[SparseEmbeddings],
    labels,
    top_k: Sequence[int] = (1, 5),
) -> dict:
    """`top{k}_accuracy` for each k, `mean_per_class_top1`, `num_images`, `num_classes` and
    `zero_embedding_fraction` (images whose embedding is all zeros).

    `class_prompt_embeddings`: per class, the embeddings of its prompts (see `split_prompts`);
    `labels`: per image, the index of its true class."""
    classes = class_vectors(class_prompt_embeddings)
    num_classes, width = classes.shape
    if image_embeddings.width != width:
        raise ValueError(f"Image embeddings are {image_embeddings.width}-d but the class prompts are {width}-d.")
    labels = np.asarray(labels, np.int64)
    if len(labels) != len(image_embeddings):
        raise ValueError(f"{len(labels)} labels for {len(image_embeddings)} images.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) for {num_classes} classes; got {labels.min()}..{labels.max()}.")
    images = float64_csr(image_embeddings)
    scores = np.asarray(unit_rows(images) @ classes.T)  # [N, C]
    true_scores = scores[np.arange(len(labels)), labels]
    # Pessimistic ties: every other class scoring >= the true class ranks above it.
    ranks = (scores >= true_scores[:, None]).sum(axis=1) - 1
    result = {f"top{k}_accuracy": float((ranks < k).mean()) if len(ranks) else float("nan") for k in top_k}
    per_class = [float((ranks[labels == k] < 1).mean()) for k in range(num_classes) if (labels == k).any()]
    result["mean_per_class_top1"] = float(np.mean(per_class)) if per_class else float("nan")
    result["num_images"] = int(len(labels))
    result["num_classes"] = int(num_classes)
    result["zero_embedding_fraction"] = float((image_embeddings.row_nnz().numpy() == 0).mean()) if len(labels) else 0.0
    return result


class ZeroShotClassifier:
    """A zero-shot classifier of single images: the class vectors above (`class_embeddings`, float32
    [C, W]) and the model's logit scale. `encoder` is a `SparseCLIPEncoder`."""

    def __init__(self, encoder, class_names: Sequence[str], templates: Sequence[str] = ("a photo of a {}.",)):
        if not class_names:
            raise ValueError("A zero-shot classifier needs at least one class name.")
        self.class_names = list(class_names)
        self.templates = list(templates) or ["{}"]
        prompts = [fill_template(t, c) for c in self.class_names for t in self.templates]
        per_class = split_prompts(encoder.encode_texts(prompts, desc="class prompts"), len(self.templates))
        self.class_embeddings = class_vectors(per_class).astype(np.float32)
        self.logit_scale = float(encoder.model.effective_logit_scale().detach())

    def logits(self, image_activations: np.ndarray) -> np.ndarray:
        acts = np.atleast_2d(image_activations).astype(np.float32)
        return self.logit_scale * unit_rows(acts) @ self.class_embeddings.T

    def probabilities(self, image_activations: np.ndarray) -> np.ndarray:
        logits = self.logits(image_activations)
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def top(self, image_activation: np.ndarray, n: int = 5) -> list[tuple[str, float]]:
        probs = self.probabilities(image_activation)[0]
        order = np.argsort(-probs)[:n]
        return [(self.class_names[i], float(probs[i])) for i in order]


__all__ = ["evaluate", "class_vectors", "split_prompts", "fill_template", "ZeroShotClassifier"]

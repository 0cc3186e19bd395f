"""Captions from sparse activations, before and after steering (the paper's protocol).

A concept word becomes features through the Sparse CLIP TEXT tower (its top-K features,
`interpret.concept_features`); suppressing zeroes them and boosting sets them to the strength SS
(`interpret.steer`). The edit is applied to the image's activations before the adapter, then the VLM
answers "What's in the picture?" again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_sparse_clip.constants import FEATURE_CACHE_DIR
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.interpret import SteeringEdit, edit_from_concepts, steer

from .caption_tokenizer import build_prompt_ids, decode_answers, prompt_batch


@dataclass
class GeneratedCaptions:
    """Answers of one batch of images: the text, how many tokens were generated, and whether <eos> ended them."""

    texts: list[str]
    num_tokens: list[int]
    finished: list[bool]


@dataclass
class SteeredCaption:
    edit: SteeringEdit
    features_of: dict[str, list[int]] = field(default_factory=dict)
    before: str = ""
    after: str = ""


class SparseFeatureCaptioner:
    """A trained sparse-feature VLM + its tokenizer (+ optionally the Sparse CLIP encoder that feeds it).

    `captioner(activations) -> caption` is the callable the Space's Steering tab takes (`SpaceState.captioner`).
    """

    def __init__(self, vlm, tokenizer, encoder: SparseCLIPEncoder | None = None, max_new_tokens: int = 24, batch_size: int = 128):
        self.vlm = vlm.eval()
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.prompt_ids = build_prompt_ids(tokenizer, vlm.config.num_image_tokens, vlm.config.prompt)
        if encoder is not None:
            check_feature_source(vlm.config, encoder)

    @classmethod
    def from_pretrained(cls, vlm_path: str | os.PathLike, encoder: SparseCLIPEncoder | str | os.PathLike | None = None, **kwargs) -> "SparseFeatureCaptioner":
        """Load the VLM folder (model + tokenizer). `encoder`: a SparseCLIPEncoder, a Sparse CLIP folder (its
        tower cache in the feature cache), or None to use the one recorded in the VLM's config
        (`sparse_clip_model`) when it exists."""
        from transformers import AutoTokenizer

        from . import SparseFeatureVLMForConditionalGeneration

        vlm = SparseFeatureVLMForConditionalGeneration.from_pretrained(str(vlm_path))
        tokenizer = AutoTokenizer.from_pretrained(str(vlm_path))
        if encoder is None and vlm.config.sparse_clip_model and Path(vlm.config.sparse_clip_model).is_dir():
            encoder = vlm.config.sparse_clip_model
        if isinstance(encoder, (str, os.PathLike)):
            encoder = SparseCLIPEncoder.from_pretrained(encoder, cache_dir=FEATURE_CACHE_DIR)
        return cls(vlm, tokenizer, encoder, **kwargs)

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, activations, do_sample: bool = False, seed: int | None = None, progress: bool = False, **generate_kwargs) -> GeneratedCaptions:
        """Answers for activations [n, F] (or one row [F]): greedy by default; with `do_sample`, `seed` makes them repeatable."""
        from transformers import set_seed

        rows = np.atleast_2d(np.asarray(activations, dtype=np.float32))
        if rows.shape[1] != self.vlm.config.num_features:
            raise ValueError(f"activations have {rows.shape[1]} features; this VLM reads {self.vlm.config.num_features} features (the width of the Sparse CLIP it was trained on).")
        if seed is not None:
            set_seed(seed)
        device = self.vlm.device
        texts, num_tokens, finished = [], [], []
        eos = self.tokenizer.eos_token_id
        starts = range(0, len(rows), self.batch_size)
        for start in tqdm(starts, desc="captions", unit="batch", disable=not progress or len(starts) < 2):
            features = torch.from_numpy(rows[start : start + self.batch_size]).to(device)
            inputs = prompt_batch(self.tokenizer, self.prompt_ids, len(features), device)
            out = self.vlm.generate(
                **inputs, image_features=features, max_new_tokens=self.max_new_tokens, do_sample=do_sample,
                eos_token_id=eos, pad_token_id=self.tokenizer.pad_token_id, **generate_kwargs,
            )
            answers = out[:, len(self.prompt_ids) :]
            texts += decode_answers(self.tokenizer, out, len(self.prompt_ids))
            for answer in answers.tolist():
                ended = eos in answer
                num_tokens.append(answer.index(eos) if ended else len(answer))
                finished.append(ended)
        return GeneratedCaptions(texts, num_tokens, finished)

    def caption(self, activations, **kwargs) -> list[str]:
        return self.generate(activations, **kwargs).texts

    def __call__(self, activation) -> str:
        """One image's activations [F] -> its caption (the Space hook)."""
        return self.caption(np.asarray(activation)[None])[0]

    # -- steering ---------------------------------------------------------------------------------
    def edit(self, suppress: Sequence[str] = (), boost: Sequence[str] = (), top_k: int = 2, strength: float = 2.0,
             strength_scale: str = "max") -> tuple[SteeringEdit, dict[str, list[int]]]:
        """Concept words -> a SteeringEdit through the Sparse CLIP text tower (needs the encoder)."""
        if self.encoder is None:
            raise ValueError("Steering by concept word needs the Sparse CLIP encoder: pass encoder= (its folder or a SparseCLIPEncoder).")
        return edit_from_concepts(self.encoder, suppress, boost, top_k, strength, strength_scale)

    def steer_caption(self, activation, suppress: Sequence[str] = (), boost: Sequence[str] = (), top_k: int = 2,
                      strength: float = 2.0, strength_scale: str = "max", edit: SteeringEdit | None = None) -> SteeredCaption:
        """One image: its caption, and its caption after suppressing / boosting concepts (or applying `edit`)."""
        features_of: dict[str, list[int]] = {}
        if edit is None:
            edit, features_of = self.edit(suppress, boost, top_k, strength, strength_scale)
        activation = np.asarray(activation, np.float32)
        before, after = self.caption(np.stack([activation, steer(activation, edit)]))
        return SteeredCaption(edit, features_of, before, after)


def check_feature_source(config, encoder: SparseCLIPEncoder) -> None:
    """A VLM only understands the features of the Sparse CLIP it was trained on."""
    if encoder.width != config.num_features:
        raise ValueError(
            f"This VLM reads {config.num_features} features but the Sparse CLIP encoder has {encoder.width}: "
            f"load the Sparse CLIP it was trained on ({config.sparse_clip_model or 'see its config'})."
        )
    if config.sparse_clip_fingerprint and encoder.fingerprint() != config.sparse_clip_fingerprint:
        raise ValueError(
            f"This VLM was trained on the features of Sparse CLIP {config.sparse_clip_fingerprint} "
            f"({config.sparse_clip_model}); the encoder given is {encoder.fingerprint()}. Its features mean other things: "
            "retrain the VLM (`sparse-clip-train-vlm vlm_embedded --sparse_clip_model FOLDER`) or load the matching Sparse CLIP."
        )

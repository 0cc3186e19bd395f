"""Train the sparse-feature VLM: frozen Sparse CLIP image activations -> 2-layer MLP adapter -> small Llama.

The Sparse CLIP (default: the embedded model, outputs/embedded/sparse) is frozen: its image tower runs
once per corpus split through the one encoder, whose cache keeps the pooled outputs (`feature_cache_dir`),
so a retrained head on the same frozen tower only re-projects. A byte-level BPE is trained on the training
captions, and a Llama small enough for two CPU cores learns to answer "What's in the picture?" with the
caption (loss on the answer tokens only). Writes the model + tokenizer (`save_pretrained`) and
`vlm_training.json` (time, losses, validation caption accuracy and examples).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from transformers import Trainer, TrainingArguments, set_seed

from ..constants import FEATURE_CACHE_DIR
from .arguments import parse_config_and_flags

logger = logging.getLogger(__name__)


@dataclass
class VLMModelArguments:
    sparse_clip_model: str = field(default="outputs/embedded/sparse", metadata={"help": "the frozen Sparse CLIP whose image activations the VLM reads"})
    hidden_size: int = field(default=192, metadata={"help": "language model width"})
    num_hidden_layers: int = field(default=2)
    num_attention_heads: int = field(default=4)
    intermediate_size: int = field(default=512)
    adapter_hidden_size: int = field(default=512, metadata={"help": "hidden width of the 2-layer MLP adapter"})
    num_image_tokens: int = field(default=4, metadata={"help": "soft tokens the adapter writes per image"})
    vocab_size: int = field(default=2048, metadata={"help": "byte-level BPE vocabulary trained on the captions"})
    max_answer_tokens: int = field(default=24)
    input_top_k: int | None = field(default=None, metadata={"help": "the adapter reads each image's k largest activations only (default: all)"})
    prompt: str = field(default="What's in the picture?")


@dataclass
class VLMDataArguments:
    data_cache_dir: str = field(default=".cache/data")
    feature_cache_dir: str = field(default=str(FEATURE_CACHE_DIR), metadata={"help": "where the pooled image-tower outputs of each split are cached"})
    caption_choice: str = field(default="first", metadata={"help": "first | random: which caption of an image is the answer"})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=512, metadata={"help": "validation images captioned at the end (accuracy + examples)"})
    max_per_source: int | None = field(default=None, metadata={"help": "embedded corpus: cap per source; use the Sparse CLIP run's value (default: the corpus defaults)"})


@dataclass
class VLMTrainingArguments(TrainingArguments):
    remove_unused_columns: bool = field(default=False)


# ----------------------------------------------------------------------------------------------
def split_activations(encoder, corpus, split: str, limit: int | None = None):
    """(dataset rows, their activations) of a corpus split, optionally the first `limit` of a fixed shuffle."""
    from ..vlm.feature_cache import cached_image_activations

    dataset = corpus[split]
    if limit is not None and limit < len(dataset):
        dataset = dataset.shuffle(seed=0).select(range(limit))
    return dataset, cached_image_activations(encoder, dataset)


def captions_of(dataset) -> list[list[str]]:
    return dataset.select_columns(["text"]).to_dict()["text"]


def typical_max_activation(activations) -> float:
    """Median over images of the largest activation: the adapter's fixed input scale."""
    maxima = [float(activations.row(i)[1].max()) for i in range(len(activations)) if activations.row(i)[1].numel()]
    if not maxima:
        raise ValueError("Every training image has all-zero Sparse CLIP activations: the encoder is dead, the VLM would learn nothing.")
    return statistics.median(maxima)


def build_vlm(model_args: VLMModelArguments, tokenizer, encoder, feature_scale: float):
    from ..vlm import SparseFeatureVLMConfig, SparseFeatureVLMForConditionalGeneration
    from ..vlm.caption_tokenizer import IMAGE_TOKEN

    text_config = {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": model_args.hidden_size,
        "intermediate_size": model_args.intermediate_size,
        "num_hidden_layers": model_args.num_hidden_layers,
        "num_attention_heads": model_args.num_attention_heads,
        "num_key_value_heads": model_args.num_attention_heads,
        "max_position_embeddings": 1 + model_args.num_image_tokens + 32 + model_args.max_answer_tokens,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = SparseFeatureVLMConfig(
        text_config=text_config,
        num_features=encoder.width,
        adapter_hidden_size=model_args.adapter_hidden_size,
        num_image_tokens=model_args.num_image_tokens,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        feature_scale=feature_scale,
        input_top_k=model_args.input_top_k,
        prompt=model_args.prompt,
        sparse_clip_model=str(model_args.sparse_clip_model),
        sparse_clip_fingerprint=encoder.fingerprint(),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = SparseFeatureVLMForConditionalGeneration(config)
    model.generation_config.update(max_new_tokens=model_args.max_answer_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    return model


def caption_accuracy(captioner, activations, captions: list[list[str]], n_examples: int = 12) -> dict:
    """Greedy answers on held-out images: exact match with the first caption / any caption, and examples."""
    dense = activations.to_dense().numpy()
    generated = captioner.generate(dense, progress=True)
    first = [g == caps[0] for g, caps in zip(generated.texts, captions)]
    any_ = [g in caps for g, caps in zip(generated.texts, captions)]
    return {
        "images": len(captions),
        "exact_match_first_caption": float(np.mean(first)),
        "exact_match_any_caption": float(np.mean(any_)),
        "finished_with_eos": float(np.mean(generated.finished)),
        "examples": [{"truth": caps[0], "answer": g} for g, caps in zip(generated.texts[:n_examples], captions[:n_examples])],
    }


def train(model_args: VLMModelArguments, data_args: VLMDataArguments, training_args: VLMTrainingArguments):
    """Build, train, save. Returns (trainer, summary dict)."""
    from ..data import build_corpus
    from ..encoding import SparseCLIPEncoder
    from ..vlm import SparseFeatureCaptioner
    from ..vlm.caption_data import CaptionCollator, SparseCaptionDataset
    from ..vlm.caption_tokenizer import build_caption_tokenizer, build_prompt_ids

    if not (Path(model_args.sparse_clip_model) / "config.json").exists():
        raise FileNotFoundError(
            f"No Sparse CLIP at {model_args.sparse_clip_model}: train the embedded model first (`sparse-clip-main`, "
            "or `make main`), or pass --sparse_clip_model FOLDER."
        )
    started = time.time()
    set_seed(training_args.seed)
    encoder = SparseCLIPEncoder.from_pretrained(model_args.sparse_clip_model, cache_dir=data_args.feature_cache_dir)
    corpus = build_corpus(cache_dir=data_args.data_cache_dir, max_per_source=data_args.max_per_source)
    train_rows, train_acts = split_activations(encoder, corpus, "train", data_args.max_train_samples)
    eval_rows, eval_acts = split_activations(encoder, corpus, "validation", data_args.max_eval_samples)
    features_seconds = time.time() - started

    train_captions, eval_captions = captions_of(train_rows), captions_of(eval_rows)
    # The prompt is repeated so that its words pass the BPE's min_frequency like any caption word.
    tokenizer = build_caption_tokenizer([c for caps in train_captions for c in caps] + [model_args.prompt] * 8, vocab_size=model_args.vocab_size)
    model = build_vlm(model_args, tokenizer, encoder, typical_max_activation(train_acts))
    prompt_ids = build_prompt_ids(tokenizer, model_args.num_image_tokens, model_args.prompt)
    train_dataset = SparseCaptionDataset(train_acts, train_captions, tokenizer, prompt_ids, model_args.max_answer_tokens, data_args.caption_choice, training_args.seed)
    eval_dataset = SparseCaptionDataset(eval_acts, eval_captions, tokenizer, prompt_ids, model_args.max_answer_tokens, "first")
    logger.info("VLM: %.2fM parameters, %d training / %d validation images, feature scale %.4f",
                model.num_parameters() / 1e6, len(train_dataset), len(eval_dataset), model.config.feature_scale)

    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=CaptionCollator(tokenizer.pad_token_id), processing_class=tokenizer,
    )
    train_started = time.time()
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_seconds = time.time() - train_started
    eval_loss = trainer.evaluate()["eval_loss"]
    trainer.save_model(training_args.output_dir)
    summary = {}
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
        captioner = SparseFeatureCaptioner(model.eval(), tokenizer, batch_size=256)
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        summary = {
            "parameters": model.num_parameters(),
            "train_images": len(train_dataset),
            "feature_seconds": round(features_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "steps": trainer.state.global_step,
            "first_logged_loss": losses[0] if losses else None,
            "final_train_loss": losses[-1] if losses else None,
            "mean_train_loss": result.training_loss,
            "validation_loss": eval_loss,
            "validation_captions": caption_accuracy(captioner, eval_acts, eval_captions),
            "arguments": {"model": asdict(model_args), "data": asdict(data_args)},
        }
        (Path(training_args.output_dir) / "vlm_training.json").write_text(json.dumps(summary, indent=2))
        logger.info("VLM trained in %.0f s (features %.0f s): validation loss %.3f, exact-match %.1f%%",
                    train_seconds, features_seconds, eval_loss, 100 * summary["validation_captions"]["exact_match_first_caption"])
    return trainer, summary


def parse_args(argv=None):
    """The three argument dataclasses from flags, or from a recipe (e.g. `vlm_embedded`) followed by overriding flags."""
    return parse_config_and_flags((VLMModelArguments, VLMDataArguments, VLMTrainingArguments), argv)


__all__ = ["VLMDataArguments", "VLMModelArguments", "VLMTrainingArguments", "build_vlm", "caption_accuracy", "parse_args", "train"]

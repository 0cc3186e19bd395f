"""The VLM's tokenizer and prompt layout, built offline from the corpus captions.

A byte-level BPE (the GPT-2 scheme, via `tokenizers`) trained on the training captions and the prompt:
it needs no download, decodes exactly what it encoded, and keeps common caption words whole, so a
4K vocabulary is plenty for this corpus.

Sequence layout (loss on the answer only):

    <image> x num_image_tokens  <bos> What's in the picture?  answer-tokens <eos>
    \\____ adapter output ____/ \\______ prompt (no loss) __/ \\___ loss __________/
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>", "<image>"]  # ids 0..4 in this order
IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100


def build_caption_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; ids 0..4 are <pad> <bos> <eos> <unk> <image>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    for index, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != index:
            raise RuntimeError(f"special token {token} got id {tokenizer.token_to_id(token)}, expected {index}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        extra_special_tokens=[IMAGE_TOKEN],
        padding_side="left",  # generation pads on the left so every answer starts right after its prompt
    )


def build_prompt_ids(tokenizer, num_image_tokens: int, prompt: str) -> list[int]:
    """Image placeholders + <bos> + the question: the prefix every example and every generation shares."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    return [image_id] * num_image_tokens + [tokenizer.bos_token_id] + tokenizer.encode(prompt, add_special_tokens=False)


def encode_answer(tokenizer, answer: str, max_answer_tokens: int) -> list[int]:
    """' answer' + <eos>, truncated to `max_answer_tokens` (the <eos> always kept)."""
    ids = tokenizer.encode(" " + answer.strip(), add_special_tokens=False)[: max_answer_tokens - 1]
    return ids + [tokenizer.eos_token_id]


def encode_example(tokenizer, prompt_ids: Sequence[int], answer: str, max_answer_tokens: int) -> dict[str, list[int]]:
    """input_ids and labels of one training example (labels = -100 on the prefix)."""
    answer_ids = encode_answer(tokenizer, answer, max_answer_tokens)
    return {"input_ids": [*prompt_ids, *answer_ids], "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


def prompt_batch(tokenizer, prompt_ids: Sequence[int], batch_size: int, device=None) -> dict[str, torch.Tensor]:
    """The generation inputs for `batch_size` images: the same prefix repeated (no padding needed)."""
    input_ids = torch.tensor([list(prompt_ids)] * batch_size, dtype=torch.long, device=device)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def decode_answers(tokenizer, generated: torch.Tensor, prompt_length: int) -> list[str]:
    """The generated answers (the part after the prompt), special tokens dropped, stripped."""
    return [text.strip() for text in tokenizer.batch_decode(generated[:, prompt_length:], skip_special_tokens=True)]

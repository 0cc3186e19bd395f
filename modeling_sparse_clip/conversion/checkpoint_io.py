"""Reading checkpoints safely and failing loudly on keys that do not belong.

Torch pickles are read with `weights_only=True` only: a checkpoint is data, never code.
"""

import json
import os
import re
from collections.abc import Iterable

import torch
from safetensors.torch import load_file

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
# Prefixes that training wrappers put in front of every key: DDP/DataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointKeyError(ValueError):
    """A checkpoint's keys do not match the architecture it claims to be."""


def _list(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = "\n    ".join(keys[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"\n    {shown}{more}"


def check_keys(expected: Iterable[str], found: Iterable[str], what: str) -> None:
    """Raise `CheckpointKeyError` listing missing and unexpected keys, if any."""
    expected, found = set(expected), set(found)
    missing, unexpected = expected - found, found - expected
    if not (missing or unexpected):
        return
    parts = [f"{what}: the checkpoint does not match the expected architecture."]
    if missing:
        parts.append(f"  {len(missing)} missing key(s) (expected, not in the checkpoint):{_list(missing)}")
    if unexpected:
        parts.append(f"  {len(unexpected)} unexpected key(s) (in the checkpoint, not expected):{_list(unexpected)}")
    parts.append(
        "  Check the model name / config against the checkpoint (layer counts, a truncated or "
        "partially saved file, or a different architecture such as SigLIP/CoCa/ResNet towers)."
    )
    raise CheckpointKeyError("\n".join(parts))


def load_torch_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors`, `.pt`, `.pth` or `.bin` file, unwrapped from a training checkpoint.

    Accepts `{"state_dict": {...}}` wrappers (OpenCLIP/MetaCLIP training checkpoints) and strips
    `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    if path.endswith(".safetensors"):
        try:
            checkpoint = load_file(path, device="cpu")
        except Exception as err:  # safetensors' errors do not name the file
            raise ValueError(f"{path!r} is not a readable safetensors file ({err}); a truncated download or another format?") from None
    else:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors come in many types; say what to do instead
            reason = str(err).strip()
            found = re.search(r"Unsupported global: GLOBAL (\S+)", reason)
            reason = f"it pickles code or objects ({found.group(1)})" if found else (reason.splitlines() or [type(err).__name__])[0]
            raise ValueError(
                f"Could not read {path!r} with torch.load(weights_only=True): {reason}.\n"
                "Only plain state-dict checkpoints are supported. For an OpenAI TorchScript archive, save "
                "`torch.jit.load(path, map_location='cpu').state_dict()` with torch.save first; never load "
                "untrusted pickles with weights_only=False."
            ) from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ValueError(f"{path!r} holds a {type(checkpoint).__name__}, not a non-empty state dict.")
    not_tensors = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{path!r} is not a state dict: these entries are not tensors: {sorted(not_tensors)[:20]}. "
            "A training checkpoint should keep its weights under a 'state_dict' key."
        )
    state_dict = {}
    for key, value in checkpoint.items():
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if key in state_dict:
            raise CheckpointKeyError(f"{path!r}: key {key!r} appears twice once wrapper prefixes are stripped.")
        state_dict[key] = value
    return state_dict


def find_weights_file(folder: str, preferred: Iterable[str]) -> str:
    """The first of `preferred` file names present in `folder` (else the single weights file there)."""
    for name in preferred:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    candidates = sorted(f for f in os.listdir(folder) if f.endswith(WEIGHT_SUFFIXES))
    if len(candidates) == 1:
        return os.path.join(folder, candidates[0])
    raise FileNotFoundError(
        f"Cannot tell which weights file in {folder!r} to convert (looked for {list(preferred)}; found {candidates}). "
        "Pass the file path itself."
    )


def load_sharded_or_single(folder: str) -> dict[str, torch.Tensor]:
    """A transformers checkpoint folder: `model.safetensors`, a sharded index, or `pytorch_model.bin`."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = os.path.join(folder, index_name)
        if os.path.isfile(index_path):
            with open(index_path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            state_dict = {}
            for shard in shards:
                state_dict.update(load_torch_state_dict(os.path.join(folder, shard)))
            return state_dict
    return load_torch_state_dict(find_weights_file(folder, ("model.safetensors", "pytorch_model.bin")))

"""Shared pieces of the conversion tests: real inputs, randomised real source models, their outputs."""

import json
import os

import torch
from safetensors.torch import save_file

from modeling_sparse_clip.conversion.verify import real_images_and_captions


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Perturb EVERY parameter (fresh inits leave LayerNorms at 1/0 and attention biases at 0, which
    would let a wrong bias or norm mapping pass unnoticed)."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("logit_scale") or name.endswith("logit_bias"):
            continue
        param.add_(torch.randn(param.shape, generator=generator) * std)
    return model.eval()


def open_clip_inputs(preprocess_cfg: dict, context_length: int = 77):
    """Real images/captions through OpenCLIP's own eval transform and tokenizer."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    images, captions = real_images_and_captions()
    transform = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
    pixels = torch.stack([transform(im) for im in images])
    return images, captions, pixels, open_clip.tokenize(captions, context_length=context_length)


@torch.no_grad()
def open_clip_features(model, pixels, ids):
    return model.encode_image(pixels), model.encode_text(ids)


def write_open_clip_folder(model, model_cfg: dict, folder: str, preprocess_cfg: dict | None = None) -> str:
    """An OpenCLIP Hub-export folder (open_clip_config.json + open_clip_model.safetensors)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}, f)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(folder, "open_clip_model.safetensors"))
    return folder

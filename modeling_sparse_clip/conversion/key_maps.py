"""Explicit key maps from dense CLIP checkpoints to SparseCLIPModel's state dict.

Every source key is named once, with what happens to it (copy, transpose, q/k/v split, scalar), so
a checkpoint of another architecture fails with a list of the keys that did not fit instead of
loading garbage (nanoGPT's import style). Target names are SparseCLIPModel's (its CLIP towers use
transformers' CLIPTextModel / CLIPVisionModel layout, which matches `CLIPModel`'s).

OpenCLIP / OpenAI / MetaCLIP ViT-CLIP layout (nn.MultiheadAttention blocks):
  visual.conv1.weight                      -> vision_model.embeddings.patch_embedding.weight
  visual.class_embedding                   -> vision_model.embeddings.class_embedding
  visual.positional_embedding              -> vision_model.embeddings.position_embedding.weight
  visual.ln_pre.*                          -> vision_model.pre_layrnorm.*   (transformers' spelling)
  visual.transformer.resblocks.{i}.*       -> vision_model.encoder.layers.{i}.*   (see _block_rules)
  visual.ln_post.*                         -> vision_model.post_layernorm.*
  visual.proj        (width, embed), x @ P -> visual_projection.weight = P.T   (embed, width)
  token_embedding.weight                   -> text_model.embeddings.token_embedding.weight
  positional_embedding                     -> text_model.embeddings.position_embedding.weight
  transformer.resblocks.{i}.*              -> text_model.encoder.layers.{i}.*
  ln_final.*                               -> text_model.final_layer_norm.*
  text_projection    (width, embed), x @ P -> text_projection.weight = P.T
  logit_scale        () or (1,), log space -> logit_scale ()
CustomTextCLIP checkpoints put the text keys under `text.`; `logit_bias` is handled by the caller.
"""

from dataclasses import dataclass

import torch

from .checkpoint_io import check_keys

OPS = ("copy", "transpose", "split_qkv", "scalar")


@dataclass(frozen=True)
class KeyRule:
    source: str
    targets: tuple[str, ...]
    op: str = "copy"

    def __post_init__(self):
        assert self.op in OPS, self.op
        assert len(self.targets) == (3 if self.op == "split_qkv" else 1), self


def _norm(src: str, dst: str) -> list[KeyRule]:
    return [KeyRule(f"{src}.weight", (f"{dst}.weight",)), KeyRule(f"{src}.bias", (f"{dst}.bias",))]


def _block_rules(src: str, dst: str) -> list[KeyRule]:
    """One OpenCLIP ResidualAttentionBlock -> one transformers CLIPEncoderLayer (12 keys -> 16 keys)."""
    attn = f"{dst}.self_attn"
    return [
        *_norm(f"{src}.ln_1", f"{dst}.layer_norm1"),
        # nn.MultiheadAttention stacks [q; k; v] along the output dimension.
        KeyRule(f"{src}.attn.in_proj_weight", (f"{attn}.q_proj.weight", f"{attn}.k_proj.weight", f"{attn}.v_proj.weight"), "split_qkv"),
        KeyRule(f"{src}.attn.in_proj_bias", (f"{attn}.q_proj.bias", f"{attn}.k_proj.bias", f"{attn}.v_proj.bias"), "split_qkv"),
        *_norm(f"{src}.attn.out_proj", f"{attn}.out_proj"),
        *_norm(f"{src}.ln_2", f"{dst}.layer_norm2"),
        *_norm(f"{src}.mlp.c_fc", f"{dst}.mlp.fc1"),
        *_norm(f"{src}.mlp.c_proj", f"{dst}.mlp.fc2"),
    ]


def open_clip_key_map(vision_layers: int, text_layers: int, text_prefix: str = "") -> list[KeyRule]:
    """Rules for an OpenCLIP/OpenAI/MetaCLIP ViT CLIP with the standard text transformer."""
    t = text_prefix
    rules = [
        KeyRule("visual.conv1.weight", ("vision_model.embeddings.patch_embedding.weight",)),
        KeyRule("visual.class_embedding", ("vision_model.embeddings.class_embedding",)),
        KeyRule("visual.positional_embedding", ("vision_model.embeddings.position_embedding.weight",)),
        *_norm("visual.ln_pre", "vision_model.pre_layrnorm"),
        *_norm("visual.ln_post", "vision_model.post_layernorm"),
        KeyRule("visual.proj", ("visual_projection.weight",), "transpose"),
        KeyRule(f"{t}token_embedding.weight", ("text_model.embeddings.token_embedding.weight",)),
        KeyRule(f"{t}positional_embedding", ("text_model.embeddings.position_embedding.weight",)),
        *_norm(f"{t}ln_final", "text_model.final_layer_norm"),
        KeyRule(f"{t}text_projection", ("text_projection.weight",), "transpose"),
        KeyRule("logit_scale", ("logit_scale",), "scalar"),
    ]
    for i in range(vision_layers):
        rules += _block_rules(f"visual.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}")
    for i in range(text_layers):
        rules += _block_rules(f"{t}transformer.resblocks.{i}", f"text_model.encoder.layers.{i}")
    assert len(rules) == 14 + 12 * (vision_layers + text_layers)
    return rules


def transformers_clip_key_map(vision_layers: int, text_layers: int) -> list[KeyRule]:
    """Rules for a transformers `CLIPModel` state dict (same tower layout; projections already (out, in))."""
    layer = [
        *[f"layer_norm{i}.{p}" for i in (1, 2) for p in ("weight", "bias")],
        *[f"self_attn.{n}_proj.{p}" for n in ("q", "k", "v", "out") for p in ("weight", "bias")],
        *[f"mlp.fc{i}.{p}" for i in (1, 2) for p in ("weight", "bias")],
    ]
    keys = [
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.position_embedding.weight",
        *[f"vision_model.{n}.{p}" for n in ("pre_layrnorm", "post_layernorm") for p in ("weight", "bias")],
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight",
        "text_model.final_layer_norm.weight",
        "text_model.final_layer_norm.bias",
        "visual_projection.weight",
        "text_projection.weight",
    ]
    keys += [f"vision_model.encoder.layers.{i}.{k}" for i in range(vision_layers) for k in layer]
    keys += [f"text_model.encoder.layers.{i}.{k}" for i in range(text_layers) for k in layer]
    rules = [KeyRule(k, (k,)) for k in keys] + [KeyRule("logit_scale", ("logit_scale",), "scalar")]
    assert len(rules) == 14 + 16 * (vision_layers + text_layers)
    return rules


def apply_key_map(state_dict: dict[str, torch.Tensor], rules: list[KeyRule], what: str) -> dict[str, torch.Tensor]:
    """Map `state_dict` through `rules`; every source key must be used exactly once."""
    check_keys((r.source for r in rules), state_dict.keys(), what)
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        value = state_dict[rule.source]
        if rule.op == "copy":
            values = (value,)
        elif rule.op == "transpose":
            assert value.dim() == 2, f"{rule.source}: expected a matrix to transpose, got shape {tuple(value.shape)}"
            values = (value.t().contiguous(),)
        elif rule.op == "scalar":
            assert value.numel() == 1, f"{rule.source}: expected a scalar, got shape {tuple(value.shape)}"
            values = (value.reshape(()),)
        else:  # split_qkv
            assert value.shape[0] % 3 == 0, f"{rule.source}: first dim {value.shape[0]} is not 3 x width"
            values = tuple(v.contiguous() for v in value.chunk(3, dim=0))
        for target, v in zip(rule.targets, values):
            assert target not in out, f"two rules write {target}"
            out[target] = v.float()
    return out


def check_shapes(converted: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Same key set and the same shape per key as the freshly built model, or a readable error."""
    check_keys(expected.keys(), converted.keys(), what)
    bad = [
        f"{k}: converted {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in sorted(converted.items())
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise ValueError(f"{what}: {len(bad)} shape mismatch(es) between checkpoint and config:\n    " + "\n    ".join(bad))

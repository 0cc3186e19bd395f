"""Converters from dense CLIP checkpoints (OpenCLIP, MetaCLIP, OpenAI, transformers) to SparseCLIP.

- `open_clip`: OpenCLIP / MetaCLIP / OpenAI-layout state dicts and `open_clip_config.json` folders
  (`convert_open_clip_checkpoint`, the whole `sparse-clip-convert-open-clip` command).
- `transformers_clip`: transformers `CLIPModel` folders or Hub ids (`convert_clip_checkpoint`, the
  whole `sparse-clip-convert-clip` command).

Their shared pieces: `checkpoint_io` (loading, key checks), `key_maps` (explicit key maps),
`clip_processing` (CLIP BPE tokenizer, OpenCLIP-matching image processor), `sparse_head` (the
`--signed_rotation_head` initialisation), `processing_open_clip` (OpenCLIP-exact tokenizer and image
processor, a Hub code file), `assemble` (conversion options, building and saving the
SparseCLIPModel) and `verify` (parity on real images and captions). Publishing is
`modeling_sparse_clip.publishing`.
"""

from .assemble import ConversionOptions, assemble_sparse_clip, save_converted, write_converted
from .clip_processing import build_clip_processor, build_clip_tokenizer, build_image_processor

__all__ = ["ConversionOptions", "assemble_sparse_clip", "save_converted", "write_converted", "build_clip_processor", "build_clip_tokenizer", "build_image_processor"]

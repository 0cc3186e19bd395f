"""Converters from dense CLIP checkpoints (OpenCLIP, MetaCLIP, OpenAI, transformers) to SparseCLIP.

- `convert_open_clip_to_sparse_clip`: OpenCLIP / MetaCLIP / OpenAI-layout state dicts and
  `open_clip_config.json` folders.
- `convert_clip_to_sparse_clip`: transformers `CLIPModel` folders or Hub ids.

Shared pieces: `checkpoint_io` (loading, key checks), `key_maps` (explicit key maps),
`clip_processing` (CLIP BPE tokenizer, OpenCLIP-matching image processor), `sparse_head`
(the `--sparsify` head initialisation), `verify` (parity on real images and captions) and
`common` (arguments, assembling, saving and publishing the model).
"""

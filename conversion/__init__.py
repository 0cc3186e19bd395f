"""Command-line converters and the publisher, as thin clients of the library (`modeling_sparse_clip.conversion`,
`modeling_sparse_clip.publishing`). Installed as `sparse-clip-convert-open-clip`, `sparse-clip-convert-clip`
and `sparse-clip-publish`; from a checkout also `python -m conversion.<script>`."""

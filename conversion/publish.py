"""Publish a Sparse CLIP model to the Hub (console: `sparse-clip-publish`). See modeling_sparse_clip/cli/publish.py."""
from modeling_sparse_clip.cli.publish import main

if __name__ == "__main__":
    main()

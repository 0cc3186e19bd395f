"""Train a Sparse CLIP (console: `sparse-clip-train`). See modeling_sparse_clip/cli/train.py."""
from modeling_sparse_clip.cli.train import main

if __name__ == "__main__":
    main()

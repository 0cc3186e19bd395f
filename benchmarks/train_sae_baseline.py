"""Train a post-hoc SAE baseline (console: `sparse-clip-train-sae`). See modeling_sparse_clip/cli/train_sae.py."""

from modeling_sparse_clip.cli.train_sae import main

if __name__ == "__main__":
    main()

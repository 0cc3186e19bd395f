"""Train the sparse-feature VLM (console: `sparse-clip-train-vlm`). See modeling_sparse_clip/cli/train_vlm.py."""
from modeling_sparse_clip.cli.train_vlm import main

if __name__ == "__main__":
    main()

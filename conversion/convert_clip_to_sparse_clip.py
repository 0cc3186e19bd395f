"""Convert a transformers CLIPModel (console: `sparse-clip-convert-clip`). See modeling_sparse_clip/cli/convert_clip.py."""
from modeling_sparse_clip.cli.convert_clip import main

if __name__ == "__main__":
    main()

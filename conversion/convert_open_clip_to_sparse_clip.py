"""Convert an OpenCLIP/MetaCLIP/OpenAI checkpoint (console: `sparse-clip-convert-open-clip`). See modeling_sparse_clip/cli/convert_open_clip.py."""
from modeling_sparse_clip.cli.convert_open_clip import main

if __name__ == "__main__":
    main()

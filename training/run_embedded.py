"""The main job (console: `sparse-clip-main`, `make main`). See modeling_sparse_clip/cli/main_job.py."""
from modeling_sparse_clip.cli.main_job import main

if __name__ == "__main__":
    main()

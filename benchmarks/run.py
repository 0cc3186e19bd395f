"""Benchmark models side by side (console: `sparse-clip-bench`). See modeling_sparse_clip/cli/bench.py."""

from modeling_sparse_clip.cli.bench import main

if __name__ == "__main__":
    main()

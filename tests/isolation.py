"""Helpers for tests that start child processes: a free TCP port (gloo rendezvous, local servers), and
the source of a preamble that hides modules from a child interpreter, to prove code runs without our
package (remote code) or without torch."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker, world: int, out_dir) -> list:
    """Run `worker(rank, port, out_dir)` in `world` processes (each saves `out_dir/rank{rank}.pt`) and
    return what every rank saved."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(free_port(), str(out_dir)), nprocs=world, join=True)
    return [torch.load(f"{out_dir}/rank{r}.pt", weights_only=False) for r in range(world)]


def hide_modules(*top_level: str, repo: str | None = None) -> str:
    """Python source: importing any of `top_level` (an editable install included) fails in the child; with
    `repo`, the checkout itself also leaves `sys.path`."""
    drop_repo = (f'sys.path = [p for p in sys.path if p.rstrip("/") != {str(repo)!r} and p not in ("", ".")]\n'
                 if repo else "")
    return (
        "import sys, importlib.abc\n"
        + drop_repo
        + "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {tuple(top_level)!r}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )

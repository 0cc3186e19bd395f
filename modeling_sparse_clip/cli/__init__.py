"""The package's commands: argument dataclasses (`HfArgumentParser`) -> one library call each.

Every command is a console entry point (`sparse-clip-train`, `sparse-clip-convert-open-clip`, ...; see
pyproject.toml) and a module (`python -m modeling_sparse_clip.cli.train`). Bad input ends with ONE line
saying what is wrong and what to do; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence


class UsageError(ValueError):
    """Input the user can fix; the message says how."""


def argument_parser(dataclass_types):
    """`HfArgumentParser` whose usage errors (bad type, missing flag) are one `error:` line, not usage + error."""
    from transformers import HfArgumentParser

    class OneLineErrors(HfArgumentParser):
        def error(self, message):
            raise UsageError(f"{message} (see --help)")

    return OneLineErrors(dataclass_types)


def run_command(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)`; exceptions become one `error: ...` line on stderr (exit 1) unless `--debug`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    # Our own progress at INFO; other libraries' root-logger chatter (open_clip logs every step at INFO) only from WARNING.
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("modeling_sparse_clip").setLevel(logging.DEBUG if debug else logging.INFO)
    if debug:
        main(argv)
        return 0
    try:
        main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as stop:  # argparse's own usage errors and --help
        return stop.code if isinstance(stop.code, int) else 1
    except UsageError as error:  # a command-line mistake: nothing to debug
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - the one place that turns errors into a readable line
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0

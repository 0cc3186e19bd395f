"""`sparse-clip-convert-clip`: a transformers `CLIPModel` (folder or Hub id) -> a SparseCLIP folder.

    sparse-clip-convert-clip --source openai/clip-vit-base-patch32 --output_dir out --verify
    sparse-clip-convert-clip --source ./my-clip --output_dir out --signed_rotation_head 16384 --logit_scale_max 3.912

The library call is `modeling_sparse_clip.conversion.transformers_clip.convert_clip_checkpoint`.
"""

from dataclasses import dataclass, field

from ..conversion.assemble import ConversionOptions
from ..conversion.transformers_clip import convert_clip_checkpoint
from . import argument_parser, run_command


@dataclass
class CLIPSourceArguments:
    source: str = field(metadata={"help": "A transformers CLIPModel folder or Hub id (config.json + weights)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision when --source is a Hub id."})


@dataclass
class ConversionOutputArguments:
    """Where the converted model goes and what is done with it (shared by both convert commands)."""

    output_dir: str = field(metadata={"help": "Folder to write the SparseCLIP model, processor and Hub code to."})
    verify: bool = field(default=False, metadata={"help": "Run the source library's own model and the converted one on real images/captions and compare; "
                                                     "the output folder is moved into place only if this passes."})
    verify_tolerance: float = field(default=1e-4, metadata={"help": "Largest max-abs difference --verify accepts."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub repo id to publish the converted model and processor (with code and card) to."})


def run(argv):
    source, options, output = argument_parser((CLIPSourceArguments, ConversionOptions, ConversionOutputArguments)).parse_args_into_dataclasses(args=argv)
    return convert_clip_checkpoint(
        source.source, output.output_dir, revision=source.revision, options=options,
        verify=output.verify, verify_tolerance=output.verify_tolerance, push_to_hub=output.push_to_hub,
    )


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()

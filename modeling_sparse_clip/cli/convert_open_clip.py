"""`sparse-clip-convert-open-clip`: an OpenCLIP / MetaCLIP / OpenAI-layout ViT CLIP -> a SparseCLIP folder.

    sparse-clip-convert-open-clip --model_name ViT-B-32 --checkpoint epoch_30.pt --output_dir out --verify
    sparse-clip-convert-open-clip --checkpoint ./laion-vit-b-32 --output_dir out       # open_clip_config.json folder
    sparse-clip-convert-open-clip --checkpoint metaclip_b32_400m.pt --quick_gelu true --output_dir out  # shapes + stated activation

GELU vs QuickGELU is never guessed: it comes from --model_name (`-quickgelu` names), --pretrained_tag,
open_clip_config.json, an OpenAI export's metadata, the open_clip_train run's params.txt, or --quick_gelu;
otherwise the checkpoint is refused with a message naming --model_name.

The library call is `modeling_sparse_clip.conversion.open_clip.convert_open_clip_checkpoint`.
"""

from dataclasses import dataclass, field

from ..conversion.assemble import ConversionOptions
from ..conversion.open_clip import convert_open_clip_checkpoint
from . import argument_parser, run_command
from .convert_clip import ConversionOutputArguments


@dataclass
class OpenCLIPSourceArguments:
    checkpoint: str = field(metadata={"help": "Weights file (.pt/.pth/.bin/.safetensors) or a folder holding open_clip_config.json."})
    model_name: str | None = field(default=None, metadata={"help": "Built-in OpenCLIP architecture, e.g. ViT-B-32 or ViT-B-16-quickgelu."})
    pretrained_tag: str | None = field(
        default=None,
        metadata={"help": "OpenCLIP pretrained tag of these weights (e.g. openai, metaclip_400m): read for its preprocessing and quick_gelu; nothing is downloaded."},
    )
    quick_gelu: bool | None = field(
        default=None, metadata={"help": "State the towers' activation: true = QuickGELU (OpenAI, MetaCLIP), false = GELU. Needed for a bare "
                                "state dict whose name/config/tag is unknown (it is never guessed)."}
    )


def run(argv):
    source, options, output = argument_parser((OpenCLIPSourceArguments, ConversionOptions, ConversionOutputArguments)).parse_args_into_dataclasses(args=argv)
    return convert_open_clip_checkpoint(
        source.checkpoint, output.output_dir, model_name=source.model_name, pretrained_tag=source.pretrained_tag,
        quick_gelu=source.quick_gelu, options=options,
        verify=output.verify, verify_tolerance=output.verify_tolerance, push_to_hub=output.push_to_hub,
    )


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()

"""`sparse-clip-convert-open-clip`: an OpenCLIP / MetaCLIP / OpenAI-layout ViT CLIP -> a SparseCLIP folder.

    sparse-clip-convert-open-clip --model_name ViT-B-32 --checkpoint epoch_30.pt --output_dir out --verify
    sparse-clip-convert-open-clip --checkpoint ./laion-vit-b-32 --output_dir out       # open_clip_config.json folder
    sparse-clip-convert-open-clip --checkpoint metaclip_b32_400m.pt --output_dir out  # architecture read off the shapes

The library call is `modeling_sparse_clip.conversion.open_clip.convert_open_clip_checkpoint`.
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..conversion.assemble import ConversionOptions
from ..conversion.open_clip import convert_open_clip_checkpoint
from . import run_command
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
        default=None, metadata={"help": "Override the activation: true = QuickGELU (OpenAI, MetaCLIP), false = GELU. Inferred checkpoints default to true."}
    )


def run(argv):
    source, options, output = HfArgumentParser((OpenCLIPSourceArguments, ConversionOptions, ConversionOutputArguments)).parse_args_into_dataclasses(args=argv)
    return convert_open_clip_checkpoint(
        source.checkpoint, output.output_dir, model_name=source.model_name, pretrained_tag=source.pretrained_tag,
        quick_gelu=source.quick_gelu, options=options,
        verify=output.verify, verify_tolerance=output.verify_tolerance, push_to_hub=output.push_to_hub,
    )


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()

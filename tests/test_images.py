"""Tests for msm_jax.data.images: every pixel mode to RGB uint8, EXIF, bad files."""

import numpy as np
import pytest
from PIL import Image

from msm_jax.data.images import ImageReadError, image_size, load_image, record_image
from msm_jax.data.records import FaceRecord


def _save(tmp_path, name, image, **kwargs):
  path = tmp_path / name
  image.save(path, **kwargs)
  return path


def test_rgb_png_round_trips_exactly(tmp_path):
  pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7
  path = _save(tmp_path, "rgb.png", Image.fromarray(pixels))
  out = load_image(path, apply_exif=False)
  assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
  np.testing.assert_array_equal(out, pixels)


def test_grayscale_is_repeated_in_three_channels(tmp_path):
  gray = np.array([[0, 17], [128, 255]], dtype=np.uint8)
  out = load_image(_save(tmp_path, "gray.png", Image.fromarray(gray, "L")), apply_exif=False)
  np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=-1))


def test_rgba_is_composited_over_black(tmp_path):
  rgba = np.array([[[200, 100, 50, 128], [10, 20, 30, 255], [255, 255, 255, 0]]], dtype=np.uint8)
  out = load_image(_save(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA")), apply_exif=False)
  # round(c * a / 255): 200*128/255 = 100.39 -> 100, 100*128/255 = 50.2 -> 50,
  # 50*128/255 = 25.1 -> 25; opaque unchanged; fully transparent -> black.
  np.testing.assert_array_equal(out, [[[100, 50, 25], [10, 20, 30], [0, 0, 0]]])


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
  values = np.array([[0, 257, 65535, 1000]], dtype=np.uint16)
  path = _save(tmp_path, "gray16.png", Image.fromarray(values))
  with Image.open(path) as stored:
    assert stored.mode.startswith("I;16")
  out = load_image(path, apply_exif=False)
  # v * 255 / 65535: 257 -> 1.0, 1000 -> 3.89 -> 4 (clipping would give 255).
  np.testing.assert_array_equal(out[..., 0], [[0, 1, 255, 4]])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_cmyk_uses_the_standard_formula(tmp_path):
  path = _save(tmp_path, "cmyk.tif", Image.new("CMYK", (2, 1), (51, 102, 0, 128)))
  out = load_image(path, apply_exif=False)
  # R = (255 - K)(1 - C/255) = 127 * 0.8 = 101.6 -> 102; G = 127 * 0.6 = 76.2 -> 76;
  # B = 127 * 1.0 = 127.
  np.testing.assert_array_equal(out, [[[102, 76, 127], [102, 76, 127]]])


def test_palette_with_and_without_transparency(tmp_path):
  palette_image = Image.new("P", (2, 1))
  palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
  palette_image.putpixel((1, 0), 1)
  opaque = load_image(_save(tmp_path, "p.png", palette_image), apply_exif=False)
  np.testing.assert_array_equal(opaque, [[[10, 20, 30], [200, 100, 50]]])
  transparent = load_image(
    _save(tmp_path, "pt.png", palette_image, transparency=0), apply_exif=False
  )
  np.testing.assert_array_equal(transparent, [[[0, 0, 0], [200, 100, 50]]])


def test_exif_orientation_6_is_applied_only_on_request(tmp_path):
  # Stored 16 wide x 8 high: left half red, right half blue. Orientation 6 means
  # "rotate 90 degrees clockwise to display": the left half ends up on top.
  stored = np.zeros((8, 16, 3), dtype=np.uint8)
  stored[:, :8] = (255, 0, 0)
  stored[:, 8:] = (0, 0, 255)
  exif = Image.Exif()
  exif[0x0112] = 6
  path = _save(tmp_path, "rotated.jpg", Image.fromarray(stored), quality=100, exif=exif)
  raw = load_image(path, apply_exif=False)
  assert raw.shape == (8, 16, 3)
  np.testing.assert_allclose(raw[4, 3], (255, 0, 0), atol=12)
  upright = load_image(path, apply_exif=True)
  assert upright.shape == (16, 8, 3)
  np.testing.assert_allclose(upright[3, 4], (255, 0, 0), atol=12)
  np.testing.assert_allclose(upright[12, 4], (0, 0, 255), atol=12)
  assert image_size(path) == (16, 8)  # the stored grid, as the annotations use


def test_truncated_jpeg_raises_image_read_error_naming_the_file(tmp_path):
  noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  path = _save(tmp_path, "whole.jpg", Image.fromarray(noise), quality=95)
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  with pytest.raises(ImageReadError, match="truncated") as info:
    load_image(truncated, apply_exif=False)
  assert str(truncated) in str(info.value) and info.value.path == str(truncated)
  assert isinstance(info.value, ValueError)


def test_non_image_file_raises_image_read_error(tmp_path):
  path = tmp_path / "notes.jpg"
  path.write_text("this is not a JPEG")
  with pytest.raises(ImageReadError, match="notes.jpg"):
    load_image(path, apply_exif=False)
  with pytest.raises(ImageReadError, match="notes.jpg"):
    image_size(path)


def test_missing_file_raises_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError, match="absent.png"):
    load_image(tmp_path / "absent.png", apply_exif=False)


def test_record_image_prefers_embedded_pixels_then_reads_the_file(tmp_path):
  embedded = np.full((3, 4, 3), 9, dtype=np.uint8)
  record = FaceRecord(
    image_path=None, landmarks=[[1.0, 1.0]], box=[0, 0, 2, 2], subset="x", image=embedded
  )
  np.testing.assert_array_equal(record_image(record), embedded)
  pixels = np.full((5, 6, 3), 77, dtype=np.uint8)
  path = _save(tmp_path, "face.png", Image.fromarray(pixels))
  on_disk = FaceRecord(image_path=str(path), landmarks=[[1.0, 1.0]], box=[0, 0, 2, 2], subset="x")
  np.testing.assert_array_equal(record_image(on_disk), pixels)

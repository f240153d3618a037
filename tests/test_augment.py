"""Tests for msm_jax.data.augment: crops, random similarities, the OpenCV warp, photometry."""

import re

import numpy as np
import pytest

from msm_jax.core import geometry
from msm_jax.data import augment


def _bilinear_reference(image, out_to_in, out_size):
  """Straightforward bilinear sampling, zeros outside, pixel centres at integers.

  Written independently of augment.warp_image (no PIL, no windowing): every output
  pixel centre is mapped to the input and the four neighbours are weighted,
  a neighbour outside the image contributing zero.
  """
  height, width = image.shape[:2]
  rows, cols = np.meshgrid(np.arange(out_size), np.arange(out_size), indexing="ij")
  points = np.stack([cols.ravel(), rows.ravel()], axis=-1).astype(np.float64)
  source = points @ out_to_in[:2, :2].T + out_to_in[:2, 2]
  x, y = source[:, 0], source[:, 1]
  x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
  fx, fy = x - x0, y - y0
  result = np.zeros((len(x), image.shape[2]))
  for dy, dx, weight in (
    (0, 0, (1 - fy) * (1 - fx)),
    (0, 1, (1 - fy) * fx),
    (1, 0, fy * (1 - fx)),
    (1, 1, fy * fx),
  ):
    xi, yi = x0 + dx, y0 + dy
    inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
    values = image[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)].astype(np.float64)
    result += np.where(inside, weight, 0.0)[:, None] * values
  return result.reshape(out_size, out_size, -1)


def _rounding_bound(image, out_to_in, out_size):
  """Per output pixel, how far `warp_image` may be from the exact bilinear value (module
  docstring of augment): 1/2 for the uint8 rounding, (|f_x| + |f_y|) / 64 for OpenCV's sample
  position rounded to 1/32 pixel, with the slopes bounded by the largest neighbour differences
  in the 4 x 4 pixels around the sample (the cell it is in and those the rounding can reach,
  zeros outside), and 0.05 for OpenCV's 15-bit fixed-point weights (4 x 255 / 2^15 = 0.03)."""
  height, width = image.shape[:2]
  padded = np.zeros((height + 6, width + 6, image.shape[2]))
  padded[3:-3, 3:-3] = image
  rows, cols = np.meshgrid(np.arange(out_size), np.arange(out_size), indexing="ij")
  points = np.stack([cols.ravel(), rows.ravel()], axis=-1).astype(np.float64)
  source = points @ out_to_in[:2, :2].T + out_to_in[:2, 2]
  x0 = np.clip(np.floor(source[:, 0]).astype(int), -2, width) + 3
  y0 = np.clip(np.floor(source[:, 1]).astype(int), -2, height) + 3
  offsets = np.arange(-1, 3)
  patches = padded[(y0[:, None] + offsets)[:, :, None], (x0[:, None] + offsets)[:, None, :]]
  slope_x = np.abs(np.diff(patches, axis=2)).max(axis=(1, 2))
  slope_y = np.abs(np.diff(patches, axis=1)).max(axis=(1, 2))
  bound = 0.5 + (slope_x + slope_y) / 64 + 0.05
  return bound.reshape(out_size, out_size, -1)


def _random_similarity(rng, scale_range, shift_range):
  angle = rng.uniform(-np.pi, np.pi)
  scale = rng.uniform(*scale_range)
  matrix = np.eye(3)
  matrix[:2, :2] = scale * np.array(
    [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
  )
  matrix[:2, 2] = rng.uniform(*shift_range, size=2)
  return matrix


def test_warp_image_matches_numpy_reference_including_borders():
  rng = np.random.default_rng(0)
  for _ in range(12):
    height, width = rng.integers(9, 60, size=2)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    out_size = int(rng.integers(5, 40))
    # Scales 0.3-3 and shifts that put the image partly outside the output.
    image_to_out = _random_similarity(rng, (0.3, 3.0), (-30, 30))
    reference = _bilinear_reference(image, np.linalg.inv(image_to_out), out_size)
    warped = augment.warp_image(image, image_to_out, out_size).astype(np.float64)
    bound = _rounding_bound(image, np.linalg.inv(image_to_out), out_size)
    assert np.all(np.abs(warped - reference) <= bound)


def test_warp_image_matches_sampler_warp():
  jnp = pytest.importorskip("jax.numpy")
  from msm_jax.core import sampler

  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
  out_size = 32
  # Rotate by 0.5 rad and zoom by 0.9 about the image centre (22, 18), which
  # lands on the output centre (15.5, 15.5): the output is mostly image.
  linear = 0.9 * np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
  image_to_out = np.eye(3)
  image_to_out[:2, :2] = linear
  image_to_out[:2, 2] = np.array([15.5, 15.5]) - linear @ np.array([22.0, 18.0])
  theta = geometry.pixel_matrix_to_theta(
    np.linalg.inv(image_to_out), (37, 45), (out_size, out_size)
  )
  expected = np.asarray(
    sampler.warp(
      jnp.asarray(image[None], jnp.float32),
      jnp.asarray(theta[None], jnp.float32),
      (out_size, out_size),
    )
  )[0]
  warped = augment.warp_image(image, image_to_out, out_size).astype(np.float64)
  bound = _rounding_bound(image, np.linalg.inv(image_to_out), out_size)
  assert np.all(np.abs(warped - expected) <= bound + 1e-3)  # + the sampler's float32
  assert (expected > 0).mean() > 0.5  # the test image actually fills the output


def test_warp_image_hand_computed_half_pixel_shift():
  # Output pixel j samples input x = j + 0.5: the mean of columns j and j + 1;
  # the last output column samples 3.5, half of column 3 and half of zero padding.
  image = np.zeros((4, 4, 3), np.uint8)
  image[:, :, 0] = np.array([0, 100, 200, 40], np.uint8)
  shift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # image -> output
  warped = augment.warp_image(image, shift, 4)
  np.testing.assert_array_equal(warped[0, :, 0], [50, 150, 120, 20])
  identity = augment.warp_image(image, np.eye(3), 4)
  np.testing.assert_array_equal(identity, image)


def test_warp_image_outside_and_errors():
  image = np.full((10, 10, 3), 200, np.uint8)
  far_away = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  assert not augment.warp_image(image, far_away, 8).any()
  with pytest.raises(ValueError, match="uint8"):
    augment.warp_image(image.astype(np.float32), np.eye(3), 8)
  with pytest.raises(ValueError, match="non-singular"):
    augment.warp_image(image, np.zeros((3, 3)), 8)


def test_flip_matrix_mirrors_columns_and_is_an_involution():
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  flip = augment.flip_matrix(16)
  np.testing.assert_array_equal(augment.warp_image(image, flip, 16), image[:, ::-1])
  np.testing.assert_allclose(flip @ flip, np.eye(3))


def test_face_crop_matrix_hand_computed():
  # Box 40 x 20 centred at (30, 30), margin 1.5 -> square side 60: [0, 60]^2.
  # Its edges map to the crop edges -0.5 and 63.5: crop = x * 64 / 60 - 0.5.
  matrix = augment.face_crop_matrix([10, 20, 50, 40], 64, 1.5)
  points = np.array([[0.0, 0.0], [60.0, 60.0], [30.0, 30.0], [15.0, 45.0]])
  np.testing.assert_allclose(
    geometry.apply_affine(points, matrix), points * 64 / 60 - 0.5, atol=1e-9
  )
  with pytest.raises(ValueError, match="x1 > x0"):
    augment.face_crop_matrix([10, 20, 5, 40], 64, 1.5)


def test_random_augmentation_matrix_ranges():
  rng = np.random.default_rng(3)
  size, centre = 128, 63.5
  angles, zooms, shifts = [], [], []
  for _ in range(400):
    matrix = augment.random_augmentation_matrix(rng, size, 30.0, 0.1, 0.05)
    linear = matrix[:2, :2]
    zoom = np.sqrt(np.linalg.det(linear))
    np.testing.assert_allclose(linear.T @ linear, zoom**2 * np.eye(2), atol=1e-9)  # similarity
    angles.append(np.degrees(np.arctan2(linear[1, 0], linear[0, 0])))
    zooms.append(zoom)
    shifts.append(geometry.apply_affine(np.array([[centre, centre]]), matrix)[0] - centre)
  angles, zooms, shifts = map(np.asarray, (angles, zooms, shifts))
  assert np.abs(angles).max() <= 30.0 and np.abs(angles).max() > 27.0
  assert zooms.min() >= 0.9 and zooms.max() <= 1.1 and np.ptp(zooms) > 0.18
  assert np.abs(shifts).max() <= 0.05 * size and np.abs(shifts).max() > 0.04 * size
  # No augmentation: the identity.
  np.testing.assert_allclose(
    augment.random_augmentation_matrix(rng, size, 0, 0, 0), np.eye(3), atol=1e-12
  )


def test_color_jitter_hand_computed_on_grey():
  # On a constant grey image contrast and saturation change nothing (every pixel
  # is the mean and its own grey), so the result is round(100 * brightness).
  image = np.full((4, 4, 3), 100, np.uint8)
  brightness = np.random.default_rng(5).uniform(0.8, 1.2, size=3)[0]
  jittered = augment.color_jitter(image, np.random.default_rng(5), 0.2)
  np.testing.assert_array_equal(jittered, np.full((4, 4, 3), round(100 * brightness)))
  coloured = np.random.default_rng(6).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  np.testing.assert_array_equal(
    augment.color_jitter(coloured, np.random.default_rng(0), 0.0), coloured
  )


def test_color_jitter_matches_the_three_steps_applied_one_by_one():
  image = np.random.default_rng(8).integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
  brightness, contrast, saturation = np.random.default_rng(9).uniform(0.7, 1.3, size=3)
  luma = np.array([0.299, 0.587, 0.114])
  pixels = image.astype(np.float64) * brightness
  mean_grey = (pixels @ luma).mean()
  pixels = (pixels - mean_grey) * contrast + mean_grey
  grey = (pixels @ luma)[..., None]
  expected = np.clip(np.rint((pixels - grey) * saturation + grey), 0, 255)
  jittered = augment.color_jitter(image, np.random.default_rng(9), 0.3)
  assert np.abs(jittered - expected).max() <= 1  # float32 vs float64 at .5 ties


def test_random_erasing_marks_exactly_the_landmarks_under_the_patch():
  size = 32
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  # A landmark on every pixel centre: "covered" must be the patch itself.
  grid = np.stack([cols.ravel(), rows.ravel()], axis=-1).astype(np.float32)
  for seed in range(5):
    erased, covered = augment.random_erasing(
      np.zeros((size, size, 3), np.uint8), grid, np.random.default_rng(seed)
    )
    patch = erased.any(axis=-1)
    ys, xs = np.nonzero(patch)
    rectangle = np.zeros_like(patch)
    rectangle[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    np.testing.assert_array_equal(covered.reshape(size, size), rectangle)
    assert 0.015 <= rectangle.mean() <= 0.34


def test_natural_occluder_pastes_a_photo_window_over_exactly_the_covered_landmarks():
  size = 48
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  grid = np.stack([cols.ravel(), rows.ravel()], axis=-1).astype(np.float32)
  crop = np.zeros((size, size, 3), np.uint8)
  # A photo of one flat colour: every pasted pixel takes it (resizing keeps a flat colour).
  photo = np.zeros((90, 120, 3), np.uint8) + np.array([200, 30, 90], np.uint8)
  shapes = set()
  for seed in range(12):
    occluded, covered = augment.natural_occluder(crop, grid, photo, np.random.default_rng(seed))
    pasted = occluded.any(axis=-1)
    # A landmark on every pixel centre: "covered" is exactly the pasted pixels.
    np.testing.assert_array_equal(covered.reshape(size, size), pasted)
    np.testing.assert_array_equal(occluded[pasted], np.tile([200, 30, 90], (pasted.sum(), 1)))
    ys, xs = np.nonzero(pasted)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert 0.04 <= box / size**2 <= 0.37  # 5-35 % of the crop, +- rounding
    shapes.add(bool(pasted.sum() < box))  # an ellipse leaves its box's corners
  assert shapes == {True, False}  # both rectangles and ellipses are drawn
  np.testing.assert_array_equal(crop, 0)  # the input is not modified


def _dot_image(landmarks, height, width, sigma):
  """Channel 0: a Gaussian blob at each landmark; channel 1: 40 + 20 * index nearby."""
  rows, cols = np.mgrid[0:height, 0:width]
  image = np.zeros((height, width, 3), np.float64)
  for index, (x, y) in enumerate(landmarks):
    squared = (cols - x) ** 2 + (rows - y) ** 2
    image[..., 0] += 255 * np.exp(-squared / (2 * sigma**2))
    image[..., 1] = np.where(squared <= (2.5 * sigma) ** 2, 40 + 20 * index, image[..., 1])
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _blob_centroid(crop, point, radius):
  x0, y0 = int(round(point[0])), int(round(point[1]))
  rows, cols = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
  weights = crop[rows, cols, 0].astype(np.float64)
  return np.array([(weights * cols).sum(), (weights * rows).sum()]) / weights.sum()


def test_augmented_landmarks_stay_on_their_drawn_features():
  # Six dots at non-integer positions; the permutation swaps two pairs.
  landmarks = np.array(
    [[70.3, 80.6], [130.7, 79.2], [100.1, 110.4], [80.5, 140.2], [121.9, 141.8], [100.2, 165.5]]
  )
  permutation = (1, 0, 2, 4, 3, 5)
  image = _dot_image(landmarks, 220, 200, sigma=4.0)
  box = np.concatenate([landmarks.min(0), landmarks.max(0)])
  options = augment.AugmentOptions(flip=True, rotation_degrees=30, scale=0.1, translation=0.05)
  occluded = np.array([True, False, False, False, False, False])
  flips = 0
  for seed in range(8):
    out = augment.augment_face(
      image,
      landmarks,
      occluded,
      box,
      np.random.default_rng(seed),
      crop_size=128,
      margin=1.6,
      options=options,
      flip_permutation=permutation,
    )
    # Was this draw flipped? Then the image->crop map reverses orientation.
    flipped = np.linalg.det(out["matrix"][:2, :2]) < 0
    flips += flipped
    source = np.asarray(permutation) if flipped else np.arange(6)
    assert out["visible"].all()
    np.testing.assert_array_equal(out["occluded"], occluded[source])
    for index, point in enumerate(out["landmarks"]):
      # The identity colour under the landmark is the one drawn for source[index].
      x, y = np.rint(point).astype(int)
      assert out["image"][y, x, 1] == 40 + 20 * source[index]
      # And the blob's centroid is where the landmark says (sub-pixel).
      np.testing.assert_allclose(_blob_centroid(out["image"], point, 6), point, atol=0.2)
  assert 0 < flips < 8  # both branches exercised


def test_augment_face_visibility_determinism_and_photometry():
  rng = np.random.default_rng(7)
  image = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
  landmarks = np.array([[30.0, 30.0], [70.0, 70.0], [500.0, 50.0]])  # the last is outside
  options = augment.AugmentOptions(
    flip=True,
    rotation_degrees=10,
    scale=0.1,
    translation=0.05,
    color_jitter=0.3,
    random_erasing=1.0,
  )
  kwargs = dict(crop_size=64, margin=1.2, options=options, flip_permutation=(0, 1, 2))
  box = [20, 20, 80, 80]
  first = augment.augment_face(image, landmarks, None, box, np.random.default_rng(11), **kwargs)
  again = augment.augment_face(image, landmarks, None, box, np.random.default_rng(11), **kwargs)
  other = augment.augment_face(image, landmarks, None, box, np.random.default_rng(12), **kwargs)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["image"], other["image"])
  assert first["image"].shape == (64, 64, 3) and first["image"].dtype == np.uint8
  assert first["landmarks"].dtype == np.float32 and first["landmarks"].shape == (3, 2)
  np.testing.assert_array_equal(first["visible"], [True, True, False])
  expected = geometry.apply_affine(landmarks, first["matrix"].astype(np.float64))
  np.testing.assert_allclose(first["landmarks"], expected, atol=1e-3)


def test_augment_options_from_config():
  ml_collections = pytest.importorskip("ml_collections")
  config = ml_collections.ConfigDict(
    dict(
      flip=True,
      rotation_degrees=30.0,
      scale=0.1,
      translation=0.05,
      color_jitter=0.2,
      random_erasing=0.0,
    )
  )
  options = augment.AugmentOptions.from_config(config)
  assert options == augment.AugmentOptions(True, 30.0, 0.1, 0.05, 0.2, 0.0)
  config.natural_occluder = 0.3
  assert augment.AugmentOptions.from_config(config).natural_occluder == 0.3


def test_synthetic_face_landmarks_keep_their_colour_after_augmentation():
  """On rendered faces each landmark sits on a drawn edge: the colour under it
  (bilinear) must survive the augmentation; a 1.5 px error or a missing flip
  permutation changes it several times more."""
  from scipy import ndimage

  from msm_jax.core import landmarks as landmark_schemes
  from msm_jax.data import synthetic

  def colours(image, points):
    return np.stack(
      [
        ndimage.map_coordinates(image[..., c].astype(float), [points[:, 1], points[:, 0]], order=1)
        for c in range(3)
      ],
      axis=-1,
    )

  permutation = np.asarray(landmark_schemes.get_scheme("300w").flip_permutation)
  config = synthetic.SyntheticConfig(
    image_size=160, occlusion_prob=0.0, max_noise_std=0.0, blur_prob=0.0
  )
  options = augment.AugmentOptions(flip=True, rotation_degrees=30, scale=0.1, translation=0.05)
  for seed in range(4):
    face = synthetic.render_face(0, seed, config)
    out = augment.augment_face(
      face["image"],
      face["landmarks"],
      face["occluded"],
      face["box"],
      np.random.default_rng(seed),
      crop_size=128,
      margin=1.25,
      options=options,
      flip_permutation=permutation,
    )
    flipped = np.linalg.det(out["matrix"][:2, :2]) < 0
    source = permutation if flipped else np.arange(68)
    before = colours(face["image"], face["landmarks"][source])
    after = colours(out["image"], out["landmarks"])
    wrong_points = out["landmarks"][permutation] if flipped else out["landmarks"] + 1.5
    wrong = colours(out["image"], wrong_points)
    assert np.abs(before - after).mean() < 7.0
    assert np.abs(before - wrong).mean() > 12.0


def test_scheduled_options_interpolate_between_knots_hand_computed():
  options = augment.AugmentOptions(True, 30.0, 0.2, 0.1, 0.2, 0.1, 0.3)
  schedule = (
    ("rotation_degrees", ((10.0, 30.0), (20.0, 10.0))),
    ("natural_occluder", ((5.0, 0.5),)),
  )
  at = lambda epoch: augment.scheduled_options(options, schedule, epoch)  # noqa: E731
  # Before the first knot its value, between knots a straight line, after the last its value.
  assert at(0.0).rotation_degrees == 30.0
  assert at(12.5).rotation_degrees == pytest.approx(30.0 - 20.0 * 2.5 / 10.0)
  assert at(99.0).rotation_degrees == 10.0
  assert at(0.0).natural_occluder == 0.5  # one knot: constant, the config's 0.3 unused
  # Unscheduled fields keep the options' values.
  assert (at(12.5).scale, at(12.5).flip, at(12.5).color_jitter) == (0.2, True, 0.2)
  assert augment.scheduled_options(options, (), 7.0) is options


@pytest.mark.parametrize(
  "schedule, message",
  [
    ({"flip": ((0, 1.0),)}, "not a schedulable field"),
    ({"scale": ((5, 0.1), (2, 0.2))}, "non-decreasing"),
    ({"scale": ((-1, 0.1),)}, "non-decreasing"),
    ({"natural_occluder": ((0, 1.5),)}, "values must lie in"),
    ({"rotation_degrees": ((0, -3.0),)}, "values must lie in"),
    ({"scale": (1, 2, 3)}, "expected (epoch, value) pairs"),
    ({"scale": ()}, "expected (epoch, value) pairs"),
    ({"scale": ((0, float("nan")),)}, "expected (epoch, value) pairs"),
  ],
)
def test_check_schedule_names_the_field_and_the_problem(schedule, message):
  with pytest.raises(ValueError, match=re.escape(message)) as raised:
    augment.check_schedule(schedule)
  assert f"augment.schedule.{next(iter(schedule))}" in str(raised.value)

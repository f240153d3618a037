"""Tests for msm_jax.data.stgan_pairs: I_fake, I_real and theta* of the ST-GAN (Sec. III-A)."""

import numpy as np
import pytest
from scipy import ndimage

from msm_jax.core import geometry
from msm_jax.data import augment, stgan_pairs

TEMPLATE = ((44.0, 50.0), (84.0, 50.0), (64.0, 96.0))
# Five landmarks: two pupils, a nose tip and two mouth corners; the mouth centre
# is the mean of points 3 and 4. Mirror pairs: (0, 1), (3, 4).
ANCHORS = stgan_pairs.CanonicalAnchors(left_pupil=(0,), right_pupil=(1,), mouth=(3, 4))
PERMUTATION = (1, 0, 2, 4, 3)


def _smooth_image(seed, height=240, width=220):
  """A smooth random RGB image (blurred noise) with strong contrast."""
  noise = np.random.default_rng(seed).uniform(0, 255, (height, width, 3))
  smooth = ndimage.gaussian_filter(noise, sigma=(6, 6, 0))
  smooth = (smooth - smooth.min()) / np.ptp(smooth) * 255
  return np.rint(smooth).astype(np.uint8)


def _face(rotation_degrees=12.0, zoom=1.4, offset=(105.0, 118.0)):
  """Landmarks of a tilted face whose anchors are an exact similarity of the template."""
  template_face = np.array([[44.0, 50.0], [84.0, 50.0], [64.0, 75.0], [50.0, 96.0], [78.0, 96.0]])
  angle = np.deg2rad(rotation_degrees)
  linear = zoom * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  landmarks = (template_face - 64.0) @ linear.T + np.asarray(offset)
  box = np.concatenate([landmarks.min(0) - 15, landmarks.max(0) + 15])
  return landmarks, box


def test_anchors_from_scheme_agree_with_landmarks_module():
  landmarks_module = pytest.importorskip("msm_jax.core.landmarks")
  rng = np.random.default_rng(0)
  for name in ("300w", "wflw", "cofw"):
    scheme = landmarks_module.get_scheme(name)
    shapes = rng.uniform(0, 100, (scheme.num_points, 2))
    anchors = stgan_pairs.CanonicalAnchors.from_scheme(scheme).points(shapes)
    np.testing.assert_allclose(anchors[:2], landmarks_module.pupils(shapes, scheme), atol=1e-9)
    np.testing.assert_allclose(anchors[2], landmarks_module.mouth_centre(shapes, scheme), atol=1e-9)


def test_template_points_scale_pixel_areas():
  np.testing.assert_allclose(stgan_pairs.template_points(TEMPLATE, 128), TEMPLATE)
  # (44 + 0.5) / 2 - 0.5 = 21.75 etc.
  np.testing.assert_allclose(
    stgan_pairs.template_points(TEMPLATE, 64), [[21.75, 24.75], [41.75, 24.75], [31.75, 47.75]]
  )
  with pytest.raises(ValueError, match="3 \\(x, y\\) points"):
    stgan_pairs.template_points(TEMPLATE[:2], 128)


def test_canonical_matrix_puts_anchors_on_the_template():
  landmarks, _ = _face(rotation_degrees=-20.0, zoom=0.8)
  matrix = stgan_pairs.canonical_matrix(landmarks, ANCHORS, TEMPLATE, 128)
  np.testing.assert_allclose(
    ANCHORS.points(geometry.apply_affine(landmarks, matrix)), TEMPLATE, atol=1e-9
  )


def _pair(seed, flip=False, color_jitter=0.0):
  landmarks, box = _face()
  options = stgan_pairs.StganPairOptions(
    crop_size=128,
    box_margin=1.1,
    perturb_rotation_degrees=30.0,
    perturb_scale=0.1,
    perturb_translation=0.1,
    template=TEMPLATE,
    flip=flip,
    color_jitter=color_jitter,
  )
  image = _smooth_image(seed)
  pair = stgan_pairs.make_stgan_pair(
    image,
    landmarks,
    box,
    np.random.default_rng(seed),
    options=options,
    anchors=ANCHORS,
    flip_permutation=PERMUTATION,
  )
  return image, landmarks, pair


def test_warping_fake_by_theta_star_gives_real():
  jnp = pytest.importorskip("jax.numpy")
  from msm_jax.core import sampler

  for seed in range(3):
    _, _, pair = _pair(seed, color_jitter=0.2)
    fake = jnp.asarray(pair["fake"][None], jnp.float32)
    warped = np.asarray(sampler.warp(fake, jnp.asarray(pair["theta"][None]), (128, 128)))[0]
    # Compare where I_real's pixel comes from well inside I_fake (not its border).
    real_to_fake = geometry.theta_to_pixel_matrix(
      pair["theta"].astype(np.float64), (128, 128), (128, 128)
    )
    rows, cols = np.mgrid[0:128, 0:128]
    grid = np.stack([cols.ravel(), rows.ravel()], -1).astype(np.float64)
    source = geometry.apply_affine(grid, real_to_fake)
    interior = np.all((source > 2) & (source < 125), axis=-1).reshape(128, 128)
    assert interior.mean() > 0.25
    error = np.abs(warped - pair["real"].astype(np.float64))[interior]
    # Two bilinear resamplings of a smooth image vs one: small differences only
    # (a wrong theta* leaves errors of tens of grey levels).
    assert error.mean() < 1.0 and np.percentile(error, 99) < 3.0


def test_theta_star_maps_real_landmarks_onto_fake_landmarks():
  _, landmarks, pair = _pair(4)
  fake_points = geometry.apply_affine(landmarks, pair["fake_matrix"].astype(np.float64))
  real_points = geometry.apply_affine(landmarks, pair["real_matrix"].astype(np.float64))
  real_to_fake = geometry.theta_to_pixel_matrix(
    pair["theta"].astype(np.float64), (128, 128), (128, 128)
  )
  np.testing.assert_allclose(
    geometry.apply_affine(real_points, real_to_fake), fake_points, atol=1e-3
  )
  # The real crop puts the anchors on the template.
  np.testing.assert_allclose(ANCHORS.points(real_points), TEMPLATE, atol=1e-3)
  # The fake crop is perturbed: its anchors are NOT on the template.
  assert np.abs(ANCHORS.points(fake_points) - np.asarray(TEMPLATE)).max() > 2.0


def test_fake_landmarks_are_the_landmarks_in_i_fake_renamed_when_flipped():
  """The joint stage's targets: each landmark where I_fake shows it, and after a flip the
  subject's left/right renamed as for I_real."""
  flipped_count = 0
  for seed in range(10):
    _, landmarks, pair = _pair(seed, flip=True)
    fake_matrix = pair["fake_matrix"].astype(np.float64)
    expected = geometry.apply_affine(landmarks, fake_matrix)
    if np.linalg.det(fake_matrix[:2, :2]) < 0:
      flipped_count += 1
      expected = expected[np.asarray(PERMUTATION)]
    np.testing.assert_allclose(pair["fake_landmarks"], expected, atol=1e-3)
  assert 0 < flipped_count < 10


def test_real_crop_samples_the_image_at_the_canonical_pose():
  image, landmarks, pair = _pair(5)
  expected = augment.warp_image(image, pair["real_matrix"].astype(np.float64), 128)
  # real_matrix is kept in float32: a sample position within its rounding of one of OpenCV's
  # 1/32-pixel steps takes the neighbouring step, (|f_x| + |f_y|) / 32 <= 16 grey levels away.
  difference = np.abs(pair["real"].astype(int) - expected)
  assert difference.max() <= 16 and np.mean(difference > 0) < 1e-3
  _, _, again = _pair(5)
  for key in pair:
    np.testing.assert_array_equal(pair[key], again[key])


def test_flipped_pairs_put_the_mirrored_face_on_the_template():
  flipped_count = 0
  for seed in range(10):
    image, landmarks, pair = _pair(seed, flip=True)
    real_matrix = pair["real_matrix"].astype(np.float64)
    flipped = np.linalg.det(real_matrix[:2, :2]) < 0
    flipped_count += flipped
    real_points = geometry.apply_affine(landmarks, real_matrix)
    if flipped:
      # After mirroring, the subject's image-left pupil appears on the right:
      # the ORIGINAL left pupil lands on the template's RIGHT pupil.
      real_points = real_points[np.asarray(PERMUTATION)]
    np.testing.assert_allclose(ANCHORS.points(real_points), TEMPLATE, atol=1e-3)
  assert 0 < flipped_count < 10


def test_flipped_fake_crop_still_frames_the_box():
  # Without perturbation the box centre lands on the crop centre, flipped or not,
  # and the box (width 1.1 x its side) spans the crop.
  landmarks, box = _face(offset=(80.0, 118.0))  # off-centre: a mirror error would show
  options = stgan_pairs.StganPairOptions(
    box_margin=1.1,
    perturb_rotation_degrees=0.0,
    perturb_scale=0.0,
    perturb_translation=0.0,
    template=TEMPLATE,
    flip=True,
  )
  image = _smooth_image(0)
  flips = 0
  for seed in range(8):
    pair = stgan_pairs.make_stgan_pair(
      image,
      landmarks,
      box,
      np.random.default_rng(seed),
      options=options,
      anchors=ANCHORS,
      flip_permutation=PERMUTATION,
    )
    fake_matrix = pair["fake_matrix"].astype(np.float64)
    flips += np.linalg.det(fake_matrix[:2, :2]) < 0
    centre = (box[:2] + box[2:]) / 2
    np.testing.assert_allclose(
      geometry.apply_affine(centre[None], fake_matrix)[0], [63.5, 63.5], atol=1e-3
    )
  assert 0 < flips < 8


def test_options_from_config():
  ml_collections = pytest.importorskip("ml_collections")
  config = ml_collections.ConfigDict()
  config.data = dict(crop_size=64, box_margin=1.3)
  config.augment = dict(flip=True, color_jitter=0.1)
  config.stgan = dict(
    perturb_rotation_degrees=20.0,
    perturb_scale=0.05,
    perturb_translation=0.02,
    template_source="fixed",
    template_left_pupil=(1.0, 2.0),
    template_right_pupil=(3.0, 4.0),
    template_mouth=(5.0, 6.0),
  )
  options = stgan_pairs.StganPairOptions.from_config(config)
  assert options == stgan_pairs.StganPairOptions(
    64, 1.3, 20.0, 0.05, 0.02, ((1.0, 2.0), (3.0, 4.0), (5.0, 6.0)), True, 0.1
  )
  # An unresolved data-derived template, or an unknown source, is refused by name.
  config.stgan.template_source = "training_crops"
  with pytest.raises(ValueError, match="resolve_template"):
    stgan_pairs.StganPairOptions.from_config(config)
  config.stgan.template_source = "mean"
  with pytest.raises(ValueError, match="template_source"):
    stgan_pairs.StganPairOptions.from_config(config)


# Two shapes (pupils 0, 1; mouth corners 3, 4) with the landmark box x 0..80, y 0..100:
# margin 1.25 makes the square crop [-22.5, 112.5] x [-12.5, 112.5] (side 125), so in the
# 128 frame x_crop = (x + 22.5) * 128 / 125 - 0.5 and y_crop = (y + 12.5) * 128 / 125 - 0.5.
GT_BOX_SHAPES = np.array(
  [
    [[20.0, 30.0], [60.0, 30.0], [0.0, 0.0], [30.0, 70.0], [50.0, 70.0], [80.0, 100.0]],
    [[24.0, 30.0], [60.0, 30.0], [0.0, 0.0], [30.0, 70.0], [50.0, 70.0], [80.0, 100.0]],
  ]
)
GT_BOX_ANCHORS = stgan_pairs.CanonicalAnchors(left_pupil=(0,), right_pupil=(1,), mouth=(3, 4))


def test_ground_truth_crop_template_by_hand():
  def crop_x(x):
    return (x + 22.5) * 128 / 125 - 0.5

  def crop_y(y):
    return (y + 12.5) * 128 / 125 - 0.5

  # Mean anchors: left pupil x = mean(20, 24) = 22, right 60, mouth 40; then the mirror
  # average about x = 63.5 (127 - x, pupils swapped).
  left_x = (crop_x(22.0) + 127.0 - crop_x(60.0)) / 2
  expected = ((left_x, crop_y(30.0)), (127.0 - left_x, crop_y(30.0)), (crop_x(40.0), crop_y(70.0)))
  template = stgan_pairs.ground_truth_crop_template(GT_BOX_SHAPES, GT_BOX_ANCHORS, 1.25)
  np.testing.assert_allclose(np.array(template), np.array(expected), atol=1e-9)
  assert crop_x(40.0) == pytest.approx(63.5)  # the mouth of a symmetric box is centred
  with pytest.raises(ValueError, match="shapes must be"):
    stgan_pairs.ground_truth_crop_template(GT_BOX_SHAPES[:0], GT_BOX_ANCHORS, 1.25)


def test_resolve_template_writes_a_fixed_template_into_a_copy():
  ml_collections = pytest.importorskip("ml_collections")
  config = ml_collections.ConfigDict()
  config.data = dict(box_margin=1.25)
  config.stgan = dict(
    template_source="training_crops",
    template_left_pupil=(44.0, 50.0),
    template_right_pupil=(84.0, 50.0),
    template_mouth=(64.0, 96.0),
  )
  resolved = stgan_pairs.resolve_template(config, GT_BOX_SHAPES, GT_BOX_ANCHORS)
  template = stgan_pairs.ground_truth_crop_template(GT_BOX_SHAPES, GT_BOX_ANCHORS, 1.25)
  assert resolved.stgan.template_source == "fixed"
  assert (
    resolved.stgan.template_left_pupil,
    resolved.stgan.template_right_pupil,
    resolved.stgan.template_mouth,
  ) == template
  assert config.stgan.template_source == "training_crops"  # the caller's config is untouched
  assert config.stgan.template_mouth == (64.0, 96.0)
  # A fixed template stays as given.
  again = stgan_pairs.resolve_template(resolved, GT_BOX_SHAPES[:1], GT_BOX_ANCHORS)
  assert again.stgan.template_left_pupil == template[0]
  config.stgan.template_source = "mean"
  with pytest.raises(ValueError, match="template_source"):
    stgan_pairs.resolve_template(config, GT_BOX_SHAPES, GT_BOX_ANCHORS)


def test_pairs_from_synthetic_faces():
  """Rendered 68-point faces (yaw, roll, sharp edges): theta* still maps I_fake onto
  I_real, and the ground-truth pupils / mouth centre land near the template (three
  points, four similarity parameters: a small least-squares residual remains)."""
  jnp = pytest.importorskip("jax.numpy")
  from msm_jax.core import landmarks as landmark_schemes
  from msm_jax.core import sampler
  from msm_jax.data import synthetic

  scheme = landmark_schemes.get_scheme("300w")
  anchors = stgan_pairs.CanonicalAnchors.from_scheme(scheme)
  options = stgan_pairs.StganPairOptions(flip=True, color_jitter=0.2)
  config = synthetic.SyntheticConfig(image_size=160)
  rows, cols = np.mgrid[0:128, 0:128]
  grid = np.stack([cols.ravel(), rows.ravel()], -1).astype(np.float64)
  for index in range(3):
    face = synthetic.render_face(1, index, config)
    pair = stgan_pairs.make_stgan_pair(
      face["image"],
      face["landmarks"],
      face["box"],
      np.random.default_rng(index),
      options=options,
      anchors=anchors,
      flip_permutation=scheme.flip_permutation,
    )
    real_matrix = pair["real_matrix"].astype(np.float64)
    real_points = geometry.apply_affine(face["landmarks"], real_matrix)
    if np.linalg.det(real_matrix[:2, :2]) < 0:
      real_points = real_points[np.asarray(scheme.flip_permutation)]
    assert np.abs(anchors.points(real_points) - np.asarray(TEMPLATE)).max() < 6.0
    warped = np.asarray(
      sampler.warp(
        jnp.asarray(pair["fake"][None], jnp.float32), jnp.asarray(pair["theta"][None]), (128, 128)
      )
    )[0]
    real_to_fake = geometry.theta_to_pixel_matrix(
      pair["theta"].astype(np.float64), (128, 128), (128, 128)
    )
    source = geometry.apply_affine(grid, real_to_fake)
    interior = np.all((source > 2) & (source < 125), axis=-1).reshape(128, 128)
    assert np.abs(warped - pair["real"])[interior].mean() < 4.0

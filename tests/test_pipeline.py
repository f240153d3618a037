"""The one-jit inference pipeline (Algorithm 2): coordinates end to end, stages, batching."""

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.core import geometry, heatmaps
from msm_jax.core.landmarks import get_scheme, region_thresholds
from msm_jax.inference import pipeline
from msm_jax.models.gdnn import GDNN
from msm_jax.train import packaging, stages
from tests import tiny_models

CROP, MAPS, L = 128, 64, 68


class FixedLogits(nn.Module):
  """A stand-in hourglass whose last stack returns stored logits, whatever the image."""

  num_landmarks: int = L

  @nn.compact
  def __call__(self, images, train=False):
    maps = self.param("maps", nn.initializers.zeros, (MAPS, MAPS, self.num_landmarks))
    # Depend on the image a little so XLA cannot drop the warp (and the test checks it).
    tint = 0.0 * jnp.mean(images, axis=(1, 2, 3))[:, None, None, None]
    return jnp.broadcast_to(maps, (images.shape[0],) + maps.shape)[None] + tint


class ShiftGenerator(nn.Module):
  """A stand-in GDNN returning a fixed theta (a zoom and a shift)."""

  @nn.compact
  def __call__(self, images, train=False):
    theta = self.param("theta", lambda *_: jnp.array([[0.9, 0.1, 0.05], [-0.1, 0.9, -0.03]]))
    return jnp.broadcast_to(theta, (images.shape[0], 2, 3))


def _gaussian_logits(crop_points, sigma=1.5):
  """Log-Gaussian maps at given 128-crop points: what a perfect hourglass would output."""
  centres = heatmaps.crop_to_heatmap(crop_points, CROP, MAPS)
  ys, xs = np.mgrid[0:MAPS, 0:MAPS]
  d2 = (xs[..., None] - centres[:, 0]) ** 2 + (ys[..., None] - centres[:, 1]) ** 2
  return (-d2 / (2 * sigma**2)).astype(np.float32)


def _mean_face(rng, scale=40.0):
  """A plausible 68-point face in a 128 frame (jittered ellipse layout is enough here)."""
  angles = np.linspace(0, 2 * np.pi, L, endpoint=False)
  base = np.stack([64 + scale * np.cos(angles), 64 + 1.2 * scale * np.sin(angles)], -1)
  return (base + rng.normal(0, 1.0, base.shape)).astype(np.float32)


def _variables(face_in_canonical, dictionary):
  scheme = get_scheme("300w")
  return {
    "generator": ShiftGenerator().init(jax.random.key(0), jnp.zeros((1, CROP, CROP, 3))),
    "hourglass": {"params": {"maps": jnp.asarray(_gaussian_logits(face_in_canonical))}},
    "dictionary": jnp.asarray(dictionary),
    "thresholds": jnp.asarray(region_thresholds(scheme, 0.4, 0.6)),
  }


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(0)
  face = _mean_face(rng)
  dictionary = np.stack([_mean_face(rng) for _ in range(30)])
  return face, dictionary


def _expected_image_points(face_canonical, box, image_hw, st_theta=None):
  """Map canonical-crop points back to the image with an independent NumPy composition."""
  crop_to_image = np.linalg.inv(geometry.crop_matrix(np.asarray(box, np.float64), CROP))
  points = np.asarray(face_canonical, np.float64)
  if st_theta is not None:  # canonical crop pixel -> crop pixel
    to_crop = geometry.theta_to_pixel_matrix(
      np.asarray(st_theta, np.float64), (CROP, CROP), (CROP, CROP)
    )
    points = geometry.apply_affine(points, to_crop)
  return geometry.apply_affine(points, crop_to_image)


@pytest.mark.parametrize("use_st", [False, True])
def test_perfect_heatmaps_map_back_to_image_pixels(setup, use_st):
  face, dictionary = setup
  options = pipeline.PipelineOptions(
    use_spatial_transformer=use_st, use_shape_reconstruction=False, num_neighbours=10
  )
  infer = pipeline.make_inference_fn(ShiftGenerator(), FixedLogits(), options)
  images = np.zeros((2, 300, 260, 3), np.uint8)
  boxes = np.array([[40, 60, 200, 220], [10.5, 20.0, 250.5, 260.0]], np.float32)
  out = infer(_variables(face, dictionary), images, boxes)
  theta = np.array([[0.9, 0.1, 0.05], [-0.1, 0.9, -0.03]]) if use_st else None
  for index in range(2):
    expected = _expected_image_points(face, boxes[index], (300, 260), theta)
    # DARK decoding of exact log-Gaussians is exact; only float32 rounding remains.
    np.testing.assert_allclose(np.asarray(out["landmarks"][index]), expected, atol=2e-2)
  np.testing.assert_allclose(out["landmarks"], out["hourglass_landmarks"])
  assert out["reliable"].dtype == jnp.bool_ and out["scores"].shape == (2, L)


def test_mixed_image_sizes_by_padding_equal_separate_runs(setup):
  face, dictionary = setup
  options = pipeline.PipelineOptions(use_shape_reconstruction=True, num_neighbours=10)
  infer = pipeline.make_inference_fn(ShiftGenerator(), FixedLogits(), options)
  variables = _variables(face, dictionary)
  rng = np.random.default_rng(1)
  small = rng.integers(0, 255, (120, 150, 3), dtype=np.uint8)
  large = rng.integers(0, 255, (200, 170, 3), dtype=np.uint8)
  boxes = np.array([[10, 10, 110, 110], [30, 40, 160, 170]], np.float32)
  batch, sizes = pipeline.pad_images([small, large])
  assert batch.shape == (2, 200, 170, 3) and sizes.tolist() == [[120, 150], [200, 170]]
  together = infer(variables, batch, boxes)
  for index, image in enumerate([small, large]):
    alone = infer(variables, image[None], boxes[index : index + 1])
    np.testing.assert_allclose(together["landmarks"][index], alone["landmarks"][0], atol=1e-3)
    # The normalised coordinates differ with the padded size: float32 rounding of ~1e-5 px
    # moves a sample on a random texture by up to ~255 * 1e-5 / 255 in [0, 1] units.
    np.testing.assert_allclose(
      together["canonical_faces"][index], alone["canonical_faces"][0], atol=1e-4
    )


@pytest.mark.parametrize("hourglass_weight", [0.0, 0.6])
def test_shape_repair_matches_stage_by_stage_reference(setup, hourglass_weight):
  face, dictionary = setup
  options = pipeline.PipelineOptions(
    use_spatial_transformer=False, num_neighbours=10, hourglass_weight=hourglass_weight
  )
  infer = pipeline.make_inference_fn(ShiftGenerator(), FixedLogits(), options)
  variables = _variables(face, dictionary)
  # Make the jaw unreliable: flatten its logits so its normalised score collapses.
  maps = np.asarray(variables["hourglass"]["params"]["maps"]).copy()
  maps[..., :17] = 0.0
  variables["hourglass"] = {"params": {"maps": jnp.asarray(maps)}}
  images = np.zeros((1, 128, 128, 3), np.float32)
  boxes = np.array([[-0.5, -0.5, 127.5, 127.5]], np.float32)  # the crop is the image
  out = infer(variables, images, boxes)
  reliable = np.asarray(out["reliable"][0])
  assert not reliable[:17].any() and reliable[17:].all()

  # Stage by stage in plain NumPy (no library code): a least-squares similarity of the
  # reliable points onto the dictionary mean, the k = 10 exemplars nearest on the reliable
  # landmarks, the ridge fit of Eq. 11 (lambda = 60), the unreliable points replaced, undone,
  # then averaged with the hourglass's points at the hourglass's weight.
  points = np.asarray(out["hourglass_landmarks"][0], np.float64)
  mean_shape = np.asarray(dictionary, np.float64).mean(0)
  x, y = points[reliable, 0], points[reliable, 1]
  ones, zeros = np.ones_like(x), np.zeros_like(x)
  design = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])
  a, b, tx, ty = np.linalg.lstsq(
    design, np.concatenate([mean_shape[reliable, 0], mean_shape[reliable, 1]]), rcond=None
  )[0]
  similarity = np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])
  canonical = points @ similarity[:2, :2].T + similarity[:2, 2]
  exemplars = np.asarray(dictionary, np.float64)
  distances = ((exemplars[:, reliable] - canonical[reliable]) ** 2).sum(axis=(1, 2))
  nearest = exemplars[np.argsort(distances)[:10]]  # [k, L, 2]
  basis = nearest[:, reliable].reshape(10, -1).T  # [2R, k]
  alpha = np.linalg.solve(
    basis.T @ basis + 60.0 * np.eye(10), basis.T @ canonical[reliable].ravel()
  )
  repaired = np.where(reliable[:, None], canonical, np.einsum("k,kld->ld", alpha, nearest))
  inverse = np.linalg.inv(similarity)
  expected = repaired @ inverse[:2, :2].T + inverse[:2, 2]
  expected = hourglass_weight * points + (1 - hourglass_weight) * expected
  np.testing.assert_allclose(np.asarray(out["landmarks"][0]), expected, atol=1e-2)
  # Reliable landmarks are kept, unreliable ones moved.
  np.testing.assert_allclose(
    out["landmarks"][0, 17:], out["hourglass_landmarks"][0, 17:], atol=1e-3
  )
  assert (
    np.abs(np.asarray(out["landmarks"][0, :17] - out["hourglass_landmarks"][0, :17])).max() > 0.5
  )


def test_lowers_to_one_computation_without_host_callbacks(setup):
  face, dictionary = setup
  infer = pipeline.make_inference_fn(
    ShiftGenerator(), FixedLogits(), pipeline.PipelineOptions(num_neighbours=10)
  )
  lowered = infer.lower(
    _variables(face, dictionary),
    jnp.zeros((3, 160, 140, 3), jnp.uint8),
    jnp.zeros((3, 4), jnp.float32),
  )
  text = lowered.as_text()
  assert "callback" not in text and "host" not in text.lower().replace("host_memory", "")
  compiled = lowered.compile()
  # The compiled function runs and gives the same result as the jitted one.
  variables = _variables(face, dictionary)
  images, boxes = np.zeros((3, 160, 140, 3), np.uint8), np.tile([[10, 20, 130, 140]], (3, 1))
  np.testing.assert_allclose(
    compiled(variables, images, boxes.astype(np.float32))["landmarks"],
    infer(variables, images, boxes.astype(np.float32))["landmarks"],
    atol=1e-4,
  )


@pytest.mark.parametrize("roll_degrees", [0.0, 35.0, -50.0])
def test_recrop_is_the_upright_landmark_box_square(setup, roll_degrees):
  face, dictionary = setup
  options = pipeline.PipelineOptions(box_margin=1.25)
  # The dictionary's mean shape, scaled by 1.7, turned and moved: the face in a photo.
  mean_shape = np.asarray(dictionary, np.float64).mean(0)
  angle = np.deg2rad(roll_degrees)
  turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  in_photo = 1.7 * mean_shape @ turn.T + [310.0, 240.0]
  crop_to_image = np.asarray(
    pipeline.landmark_crop_to_image(
      jnp.asarray(in_photo[None], jnp.float32), jnp.asarray(dictionary), options
    )[0],
    np.float64,
  )
  in_crop = geometry.apply_affine(in_photo, np.linalg.inv(crop_to_image))
  # Upright: in the crop the face is the mean shape scaled and shifted, not turned.
  fit = geometry.estimate_similarity(mean_shape, in_crop)
  assert abs(np.arctan2(fit[1, 0], fit[0, 0])) < 1e-4
  # The tight box of the points is centred in the crop, its long side 128 / 1.25 pixels.
  low, high = in_crop.min(0), in_crop.max(0)
  np.testing.assert_allclose((low + high) / 2, [63.5, 63.5], atol=1e-3)
  np.testing.assert_allclose(np.max(high - low), CROP / 1.25, rtol=1e-5)


def test_recrop_without_turning_equals_a_second_call_on_the_landmark_square(setup):
  face, dictionary = setup
  options = pipeline.PipelineOptions(use_shape_reconstruction=False, num_neighbours=10)
  variables = _variables(face, dictionary)
  images = np.random.default_rng(3).integers(0, 255, (2, 300, 260, 3), dtype=np.uint8)
  boxes = np.array([[40, 60, 200, 220], [30.0, 20.0, 230.0, 250.0]], np.float32)
  once = pipeline.make_inference_fn(ShiftGenerator(), FixedLogits(), options)
  twice = pipeline.make_inference_fn(
    ShiftGenerator(),
    FixedLogits(),
    dataclasses.replace(options, recrop_passes=1, upright_recrop=False),
  )
  first = np.asarray(once(variables, images, boxes)["landmarks"], np.float64)
  # The training crop of the first landmarks, computed here with NumPy.
  low, high = first.min(1), first.max(1)
  half = 1.25 * np.max(high - low, axis=1, keepdims=True) / 2
  squares = np.concatenate([(low + high) / 2 - half, (low + high) / 2 + half], 1)
  expected = once(variables, images, squares.astype(np.float32))
  got = twice(variables, images, boxes)
  np.testing.assert_allclose(got["landmarks"], expected["landmarks"], atol=2e-2)
  # The second crop really differs from the first: the landmarks moved with it.
  assert np.abs(np.asarray(got["landmarks"]) - first).max() > 1.0


def test_pad_images_rejects_empty():
  with pytest.raises(ValueError, match="no images"):
    pipeline.pad_images([])


def test_flip_test_makes_the_landmarks_mirror_equivariant():
  # A random hourglass is not mirror-symmetric; averaging its maps with the mirrored crop's
  # (permuted by the scheme) makes the landmarks of a mirrored image the mirrored landmarks.
  from msm_jax.models.hourglass import StackedHourglass

  hourglass = StackedHourglass(num_landmarks=L, width=8, depth=2, stem_widths=(4, 4, 8))
  rng = np.random.default_rng(4)
  variables = {
    "hourglass": tiny_models.random_variables(hourglass, rng),
    "thresholds": jnp.zeros(L),
  }
  permutation = tuple(get_scheme("300w").flip_permutation)
  image = rng.integers(0, 255, (1, 150, 170, 3), dtype=np.uint8)
  box = np.array([[30.0, 20.0, 140.0, 130.0]], np.float32)
  width = image.shape[2]
  mirrored_box = np.array([[width - 1 - box[0, 2], box[0, 1], width - 1 - box[0, 0], box[0, 3]]])

  def mirror_error(flip_test):
    options = pipeline.PipelineOptions(
      use_spatial_transformer=False, use_shape_reconstruction=False, flip_test=flip_test
    )
    infer = pipeline.make_inference_fn(None, hourglass, options)
    points = np.asarray(infer(variables, image, box)["landmarks"][0], np.float64)
    mirrored = np.asarray(
      infer(variables, image[:, :, ::-1], mirrored_box.astype(np.float32))["landmarks"][0]
    )
    expected = points[list(permutation)] * [-1, 1] + [width - 1, 0]
    return np.abs(mirrored - expected).max()

  assert mirror_error(permutation) < 1e-2  # float32 rounding of the two warps
  assert mirror_error(None) > 0.5  # without the flip test the network's asymmetry shows


# --- gradients through the relaxed pipeline (differentiable=True) ------------------------------
#
# The checks run in float64: a central difference with step eps carries a rounding error of
# ~|f| kappa 2e-16 / eps per output (|f| ~ 100 px, kappa ~ 10 the conditioning of the repair's
# solves: 2e-6 at eps = 1e-8), and a projection on 136 outputs sums ~12 of them: 1e-4 leaves a
# margin of ~4 while a wrong or missing gradient path is off by O(1). The networks are
# ReLU/max-pool piecewise-linear maps: eps = 1e-8 keeps the random direction from crossing
# one of their kinks (a pre-activation within ~1e-7 of zero; expected count ~0.1 here).
GRADIENT_EPS, GRADIENT_TOLERANCE = 1e-8, 1e-4


def _float64(tree):
  return jax.tree.map(
    lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


def _tiny_networks(dtype):
  """The tiny GDNN and hourglass of tests/tiny_models.py computing in ``dtype``."""
  config = tiny_models.tiny_config()
  config.hourglass.compute_dtype = jnp.dtype(dtype).name
  generator = GDNN(width_multiplier=config.stgan.generator_width, dtype=dtype)
  hourglass = stages.hourglass_module(config)
  rng = np.random.default_rng(0)
  generator_variables = tiny_models.random_variables(generator, rng)
  # A GDNN output near the zoom + shift of the other tests, still depending on the image.
  generator_variables["params"]["conv11"]["bias"] = jnp.asarray(tiny_models.ZOOM_SHIFT_THETA)
  generator_variables["params"]["conv11"]["kernel"] *= 0.01
  variables = {
    "generator": generator_variables,
    "hourglass": tiny_models.random_variables(hourglass, rng),
    "dictionary": jnp.asarray(tiny_models.face_dictionary(rng)),
    "thresholds": jnp.asarray(region_thresholds(get_scheme("300w"), 0.4, 0.6)),
  }
  images = rng.random((1, 150, 140, 3))
  boxes = np.array([[8.0, 12.0, 136.0, 140.0]])
  return config, generator, hourglass, variables, images, boxes


@pytest.mark.parametrize("wrt", ["generator", "hourglass", "image"])
def test_relaxed_pipeline_gradients_match_finite_differences(wrt):
  from jax.test_util import check_grads

  with jax.enable_x64(True):
    config, generator, hourglass, variables, images, boxes = _tiny_networks(jnp.float64)
    variables, images, boxes = _float64(variables), jnp.asarray(images), jnp.asarray(boxes)
    options = pipeline.options_from_config(config, differentiable=True)
    assert options.use_spatial_transformer and options.use_shape_reconstruction
    infer = pipeline.make_inference_fn(generator, hourglass, options)
    weights = np.asarray(infer(variables, images, boxes)["reliability"])
    # The soft weights are in play: some landmarks between the saturated ends.
    assert np.any((weights > 1e-3) & (weights < 1 - 1e-3))

    if wrt == "image":
      final = jax.jit(lambda x: infer(variables, x, boxes)["landmarks"])
      argument = images
    else:
      final = jax.jit(
        lambda params: infer(
          {**variables, wrt: {**variables[wrt], "params": params}}, images, boxes
        )["landmarks"]
      )
      argument = variables[wrt]["params"]
    check_grads(
      final,
      (argument,),
      order=1,
      modes=("fwd", "rev"),
      eps=GRADIENT_EPS,
      atol=GRADIENT_TOLERANCE,
      rtol=GRADIENT_TOLERANCE,
    )
    # Not a vacuous pass: the landmarks do depend on the argument.
    tangent = jax.tree.map(jnp.ones_like, argument)
    assert float(jnp.abs(jax.jvp(final, (argument,), (tangent,))[1]).max()) > 1e-3


def test_final_landmarks_derivative_wrt_theta_matches_central_differences(setup):
  """d(final landmarks)/d(theta), theta the GDNN's output, through the warp, the hourglass,
  the decoder and the mapping back: the whole 136 x 6 Jacobian against central differences."""
  with jax.enable_x64(True):
    config, _, hourglass, variables, _, boxes = _tiny_networks(jnp.float64)
    rows, columns = np.mgrid[0:150, 0:140] / 20.0
    smooth = np.stack([np.sin(rows), np.cos(columns), np.sin(rows + columns)], -1)
    images = jnp.asarray(0.5 + 0.4 * smooth[None])
    variables, boxes = _float64(variables), jnp.asarray(boxes)
    options = dataclasses.replace(
      pipeline.options_from_config(config, differentiable=True), use_shape_reconstruction=False
    )
    infer = pipeline.make_inference_fn(ShiftGenerator(), hourglass, options)

    @jax.jit
    def final(theta):
      generator_variables = {"params": {"theta": theta}}
      return infer({**variables, "generator": generator_variables}, images, boxes)["landmarks"]

    theta = jnp.array([[0.9, 0.1, 0.05], [-0.1, 0.9, -0.03]], jnp.float64)
    jacobian = np.asarray(jax.jacfwd(final)(theta))  # [1, L, 2, 2, 3]
    # A step of 1e-8 moves the samples by < 1e-6 px: ~0.05 of the 2 x 16384 samples cross a
    # pixel-centre line, where the bilinear weights kink (and the image is smooth, so that a
    # crossing changes the slope little); rounding: ~100 px x 2e-16 / 1e-8 = 2e-6 px per unit.
    step = 1e-8
    for row, column in np.ndindex(2, 3):
      delta = jnp.zeros_like(theta).at[row, column].set(step)
      central = (np.asarray(final(theta + delta)) - np.asarray(final(theta - delta))) / (2 * step)
      np.testing.assert_allclose(jacobian[..., row, column], central, atol=1e-3, rtol=1e-4)
    # A theta entry moves the landmarks by tens of pixels per unit.
    assert np.abs(jacobian).max() > 10.0


@pytest.mark.parametrize("case", ["all reliable", "none reliable", "no repair"])
def test_relaxed_pipeline_equals_the_exact_one_where_the_relaxation_is_exact(case):
  """Every soft weight saturates to exactly 0 or 1 in float32 (scores > 17 temperatures from
  their thresholds), or the repair is off: the two pipelines give the same landmarks."""
  config, generator, hourglass, variables, images, boxes = _tiny_networks(jnp.float32)
  thresholds = {"all reliable": -1.0, "none reliable": 2.0, "no repair": 0.5}[case]
  variables["thresholds"] = jnp.full((L,), thresholds, jnp.float32)
  exact = pipeline.options_from_config(config, use_sr=case != "no repair")
  relaxed = dataclasses.replace(exact, differentiable=True)
  out_exact = pipeline.make_inference_fn(generator, hourglass, exact)(variables, images, boxes)
  out_relaxed = pipeline.make_inference_fn(generator, hourglass, relaxed)(variables, images, boxes)
  # With none reliable the weights are sigmoid(-20) = 2e-9: a blend that moves a ~100 px
  # landmark by ~2e-7 px; otherwise only float32 rounding of ~100 px coordinates (~1e-5).
  np.testing.assert_allclose(out_relaxed["landmarks"], out_exact["landmarks"], atol=1e-3)
  if case == "all reliable":
    assert np.all(np.asarray(out_relaxed["reliability"]) == 1.0)
  if case != "no repair":  # the repair really acted (fallback or identity) in both
    assert bool(np.all(out_exact["reliable"])) == (case == "all reliable")


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_hourglass_weight_outside_zero_one_is_refused(weight):
  with pytest.raises(ValueError, match="hourglass_weight must be in"):
    pipeline.make_inference_fn(
      ShiftGenerator(), FixedLogits(), pipeline.PipelineOptions(hourglass_weight=weight)
    )


def test_differentiable_needs_a_decoder_with_a_gradient():
  options = pipeline.PipelineOptions(differentiable=True, decode_method="argmax")
  with pytest.raises(ValueError, match="decode_method"):
    pipeline.make_inference_fn(ShiftGenerator(), FixedLogits(), options)
  with pytest.raises(ValueError, match="reliability_temperature"):
    pipeline.make_inference_fn(
      ShiftGenerator(), FixedLogits(), pipeline.PipelineOptions(reliability_temperature=0.0)
    )


def test_docs_gradient_example_runs(tmp_path, monkeypatch):
  """The code of docs/gradients.md, run as written on a tiny package in place of the shipped
  one; the optax step must lower its loss."""
  import re

  readme = open(os.path.join(tiny_models.ROOT, "docs/gradients.md")).read()
  [code] = re.findall(r"<!-- gradient example -->\n```python\n(.*?)```", readme, re.S)

  package = tmp_path / "pretrained"
  packaging.write_package(tiny_models.tiny_pretrained(), str(package))
  monkeypatch.chdir(tmp_path)
  namespace = {}
  exec(compile(code, "docs/gradients.md", "exec"), namespace)
  assert np.isfinite(float(namespace["value"]))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(namespace["grads"]))
  loss, params = namespace["loss"], namespace["params"]
  # Adam's first step moves each parameter by ~1e-5 against its gradient: the loss falls.
  assert float(loss(params)) < float(namespace["value"])


def test_the_landmark_offset_is_added_to_both_landmark_sets_after_every_pass(setup):
  face, dictionary = setup
  variables = _variables(face, dictionary)
  images = np.zeros((1, 300, 260, 3), np.uint8)
  boxes = np.array([[40, 60, 200, 220]], np.float32)
  plain = pipeline.PipelineOptions(num_neighbours=10, recrop_passes=1)
  shifted = dataclasses.replace(plain, landmark_offset=(0.75, -0.25))
  outputs = [
    pipeline.make_inference_fn(ShiftGenerator(), FixedLogits(), options)(variables, images, boxes)
    for options in (plain, shifted)
  ]
  for key in ("landmarks", "hourglass_landmarks"):
    # Coordinates up to ~260 px: float32 rounding of the sum ~ 260 x 2^-23.
    np.testing.assert_allclose(
      np.asarray(outputs[1][key]), np.asarray(outputs[0][key]) + [0.75, -0.25], atol=1e-4
    )
  # The re-crop pass framed the same crop (the offset comes after it): same canonical points.
  np.testing.assert_array_equal(
    np.asarray(outputs[1]["canonical_landmarks"]), np.asarray(outputs[0]["canonical_landmarks"])
  )


@pytest.mark.parametrize("offset", [(np.nan, 0.0), (1.0, 2.0, 3.0)])
def test_a_landmark_offset_that_is_not_two_finite_numbers_is_refused(offset):
  with pytest.raises(ValueError, match="landmark_offset must be two finite numbers"):
    pipeline.make_inference_fn(
      ShiftGenerator(), FixedLogits(), pipeline.PipelineOptions(landmark_offset=offset)
    )

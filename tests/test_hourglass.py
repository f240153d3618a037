"""Stacked hourglass (Sec. III-B, Fig. 3-4): parameter count by hand, shapes, wiring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.models.hourglass import (
  StackedHourglass,
  _nearest_upsampling_init,
  space_to_depth,
  widen_channels,
  widen_stem,
)
from msm_jax.models.layers import Deconv2x2
from tests import float_checks

TINY = dict(num_landmarks=5, width=16, num_stacks=2, depth=2, stem_widths=(8, 8, 16))


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _numpy_variables(model, images, seed=0):
  """Random parameters without ``model.init``: compiling Flax's threefry initialisers
  costs ~10 s on CPU, far more than the tiny network itself."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
    lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), s.dtype), shapes["params"]
  )
  batch_stats = jax.tree.map(
    lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), shapes["batch_stats"]
  )
  return {"params": params, "batch_stats": batch_stats}


def _expected_parameter_count(width=256, stems=(64, 64, 128), depth=4, stacks=2, landmarks=68):
  """Layer by layer from the architecture of the module docstring: conv k*k*cin*cout +
  cout (all convs have a bias), BatchNorm 2*c (scale and bias)."""
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  batch_norm = lambda c: 2 * c

  def residual(cin, cout):
    half = cout // 2
    total = (
      batch_norm(cin)
      + conv(1, cin, half)
      + batch_norm(half)
      + conv(3, half, half)
      + batch_norm(half)
      + conv(1, half, cout)
    )
    return total + (conv(1, cin, cout) if cin != cout else 0)

  stem = (
    conv(3, 3, stems[0])
    + batch_norm(stems[0])
    + conv(3, stems[0], stems[1])
    + batch_norm(stems[1])
    + conv(3, stems[1], stems[2])
    + residual(stems[2], width)
  )
  # Per level: skip, down and up residual units and a 2x2 deconvolution; one more
  # residual unit at the bottom.
  hourglass = depth * (3 * residual(width, width) + 2 * 2 * width * width + width)
  hourglass += residual(width, width)
  head = (
    residual(width, width)
    + batch_norm(width)
    + conv(1, width, width)
    + batch_norm(width)
    + conv(1, width, landmarks)
  )
  back = conv(1, width, width) + conv(1, landmarks, width)
  return stem + stacks * (hourglass + head) + (stacks - 1) * back


def test_full_size_parameter_count():
  model = StackedHourglass()  # paper defaults: 2 stacks, depth 4, width 256, 68 maps
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3))))
  assert _count(variables["params"]) == _expected_parameter_count() == 8_701_768


def test_small_parameter_count_follows_the_same_formula():
  model = StackedHourglass(**TINY)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  assert _count(variables["params"]) == _expected_parameter_count(
    width=16, stems=(8, 8, 16), depth=2, stacks=2, landmarks=5
  )


def test_tiny_network_shapes_and_gradient():
  model = StackedHourglass(**TINY)
  images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
  variables = _numpy_variables(model, images)

  @jax.jit
  def heatmaps_and_per_stack_grads(params):
    def forward(params):
      return model.apply(
        {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
      )[0]

    heatmaps, backward = jax.vjp(forward, params)
    # Row s: the gradient of sum(heatmaps[s]) (one compiled backward pass for both).
    selectors = jnp.eye(2)[:, :, None, None, None, None] * jnp.ones_like(heatmaps)
    return heatmaps, jax.vmap(backward)(selectors)[0]

  heatmaps, grads = heatmaps_and_per_stack_grads(variables["params"])
  assert heatmaps.shape == (2, 2, 32, 32, 5) and heatmaps.dtype == jnp.float32
  largest = lambda tree, stack: max(
    float(jnp.abs(leaf[stack]).max()) for leaf in jax.tree.leaves(tree)
  )
  # Intermediate supervision: the first stack's maps do not see the second hourglass ...
  assert largest(grads["hourglass1"], stack=0) == 0.0
  assert largest(grads["hourglass0"], stack=0) > 0.0
  # ... and the second stack reads the first one's heatmaps through the 1x1 conv back.
  assert largest(grads["heatmaps_back0"], stack=1) > 0.0
  assert largest(grads["stem_conv1"], stack=1) > 0.0


def test_eval_mode_is_per_face_and_train_mode_is_per_batch():
  model = StackedHourglass(**TINY)
  images = jax.random.uniform(jax.random.key(2), (3, 64, 64, 3))
  other_companions = images.at[1:].set(jax.random.uniform(jax.random.key(4), (2, 64, 64, 3)))
  variables = _numpy_variables(model, images)
  # Running averages: a face's heatmaps do not depend on the other faces of the batch ...
  apply = jax.jit(lambda x: model.apply(variables, x, train=False))
  # (equal up to rounding: a kernel may block a batch differently when its contents change)
  np.testing.assert_allclose(
    apply(images)[:, 0], apply(other_companions)[:, 0], rtol=1e-4, atol=1e-5
  )
  # ... batch statistics do, and training moves every running average.
  train = jax.jit(lambda x: model.apply(variables, x, train=True, mutable=["batch_stats"]))
  heatmaps, stats = train(images)
  assert float(jnp.abs(heatmaps[:, 0] - train(other_companions)[0][:, 0]).max()) > 1e-3
  moved = jax.tree.map(
    lambda new, old: float(jnp.abs(new - old).max()), stats["batch_stats"], variables["batch_stats"]
  )
  assert min(jax.tree.leaves(moved)) > 0.0


def test_deconvolutions_start_as_nearest_upsampling():
  kernel = _nearest_upsampling_init(jax.random.key(0), (2, 2, 3, 3))
  x = jax.random.normal(jax.random.key(3), (1, 2, 3, 3))
  y = Deconv2x2(3).apply({"params": {"kernel": kernel, "bias": jnp.zeros(3)}}, x)
  np.testing.assert_array_equal(y, jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
  with pytest.raises(ValueError, match="Cin == Cout"):
    _nearest_upsampling_init(jax.random.key(0), (2, 2, 3, 4))


def test_bfloat16_compute_float32_parameters_and_heatmaps():
  model = StackedHourglass(**TINY, dtype=jnp.bfloat16)
  images = jnp.ones((1, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images))
  assert {p.dtype for p in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
  assert jax.eval_shape(lambda v: model.apply(v, images), variables).dtype == jnp.float32
  jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, images))(variables))
  assert "bf16[1,64,64,8] = conv_general_dilated" in jaxpr  # the first stem convolution


@pytest.mark.parametrize("shape", [(1, 100, 128, 3), (128, 128, 3)])
def test_bad_image_shapes_are_named(shape):
  with pytest.raises(ValueError, match="divisible by"):
    StackedHourglass().init(jax.random.key(0), jnp.zeros(shape))


def test_eval_mode_gradients_match_finite_differences():
  """The last stack's maps as a function of the parameters and of the image, in inference
  mode (what the differentiable pipeline and the joint stage differentiate)."""
  model = StackedHourglass(
    num_landmarks=3, width=8, depth=2, stem_widths=(4, 4, 8), dtype=jnp.float64
  )
  float_checks.check_eval_mode_gradients(model, (1, 32, 32, 3), output=lambda stacks: stacks[-1])


def test_space_to_depth_stacks_each_block_on_the_channels():
  images = np.random.default_rng(0).normal(size=(2, 6, 4, 3)).astype(np.float32)
  got = np.asarray(space_to_depth(jnp.asarray(images), 2))
  assert got.shape == (2, 3, 2, 12)
  for y in range(3):
    for x in range(2):
      for dy in range(2):
        for dx in range(2):
          channels = slice((dy * 2 + dx) * 3, (dy * 2 + dx + 1) * 3)
          np.testing.assert_array_equal(got[:, y, x, channels], images[:, 2 * y + dy, 2 * x + dx])


def test_a_widened_stem_computes_the_narrow_network_on_the_block_averaged_crop():
  """widen_stem: the b = 2 network on a 2S crop equals the b = 1 network on its 2x2 means
  (float64: the two differ only by the order of the first conv's sums)."""
  with jax.enable_x64(True):
    tiny = dict(TINY, dtype=jnp.float64)
    narrow, wide = StackedHourglass(**tiny), StackedHourglass(**tiny, space_to_depth=2)
    crops = jax.random.uniform(jax.random.key(5), (2, 64, 64, 3), jnp.float64)
    averaged = crops.reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    variables = _numpy_variables(narrow, averaged)
    widened = widen_stem(variables, 2)
    assert widened["params"]["stem_conv1"]["kernel"].shape == (3, 3, 12, 8)
    expected = narrow.apply(variables, averaged, train=False)
    got = wide.apply(widened, crops, train=False)
    assert got.shape == expected.shape == (2, 2, 16, 16, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    # The other arrays are the narrow network's own.
    assert widened["params"]["hourglass0"] is variables["params"]["hourglass0"]
    with pytest.raises(ValueError, match="divisible by"):
      wide.apply(widened, crops[:, :40, :40], train=False)


def test_a_widened_network_computes_the_narrow_one_and_its_new_channels_learn():
  """widen_channels: width 16 embedded in width 24 (bottlenecks 8 -> 12) gives the narrow
  network's maps exactly, in inference and in training mode (batch statistics: the old
  channels' values are the same, so are their statistics); float64, so the only difference
  is the order of the sums. The zero rows that read the new channels get a gradient at once
  (the new channels are computed from the old ones), so the extra width is trained."""
  with jax.enable_x64(True):
    tiny = dict(TINY, stem_widths=(8, 8, 12), dtype=jnp.float64)  # a skip conv at both widths
    narrow, wide = StackedHourglass(**tiny), StackedHourglass(**dict(tiny, width=24))
    crops = jax.random.uniform(jax.random.key(6), (2, 32, 32, 3), jnp.float64)
    variables = _numpy_variables(narrow, crops)
    widened = widen_channels(variables, _numpy_variables(wide, crops, seed=1))
    kernel = widened["params"]["hourglass0"]["skip"]["Conv1x1_0"]["kernel"]
    assert kernel.shape == (1, 1, 24, 12)
    np.testing.assert_array_equal(
      kernel[..., :16, :8], variables["params"]["hourglass0"]["skip"]["Conv1x1_0"]["kernel"]
    )
    assert float(jnp.abs(kernel[..., 16:, :]).max()) == 0.0  # reads new channels: zero
    assert float(jnp.abs(kernel[..., :16, 8:]).min()) > 0.0  # writes new channels: random
    np.testing.assert_allclose(
      wide.apply(widened, crops, train=False),
      narrow.apply(variables, crops, train=False),
      rtol=1e-9,
      atol=1e-9,
    )
    train_maps = lambda model, v: model.apply(v, crops, train=True, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(
      train_maps(wide, widened), train_maps(narrow, variables), rtol=1e-9, atol=1e-9
    )

    def loss(params):
      return jnp.sum(train_maps(wide, {**widened, "params": params}) ** 2)

    grad = jax.grad(loss)(widened["params"])["heatmaps1"]["kernel"]
    assert float(jnp.abs(grad[..., 16:, :]).max()) > 1e-6
    with pytest.raises(ValueError, match="cannot embed"):
      widen_channels(widened, variables)

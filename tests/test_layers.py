"""The CPU-fast layers equal the plain Flax/lax ops in values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.kernels import onednn
from msm_jax.models import layers
from msm_jax.models.layers import (
  BatchNormReLU,
  Conv1x1,
  Deconv2x2,
  batch_norm_relu_train,
  max_pool_2x2,
  max_pool_2x2_corners,
)


def _random(seed, shape, scale=1.0, offset=0.0):
  return jax.random.normal(jax.random.PRNGKey(seed), shape) * scale + offset


def _assert_close(actual, expected, rtol=1e-5, atol=1e-6):
  jax.tree.map(
    lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=atol), actual, expected
  )


def _values_and_gradients(module, variables, x, **kwargs):
  """Output, d(loss)/d(params) and d(loss)/dx for loss = sum(output * fixed weights)."""
  output = module.apply(variables, x, **kwargs)
  weights = _random(99, output.shape)

  def loss(params, x):
    return jnp.sum(module.apply({**variables, "params": params}, x, **kwargs) * weights)

  grad_params, grad_x = jax.grad(loss, argnums=(0, 1))(variables["params"], x)
  return output, grad_params, grad_x


def _randomise(params, seed):
  leaves, tree = jax.tree.flatten(params)
  return jax.tree.unflatten(tree, [_random(seed + i, leaf.shape) for i, leaf in enumerate(leaves)])


# "onednn" runs the layers through msm_jax/kernels where it can; the size thresholds that keep
# tiny layers on XLA are lifted so that these small cases reach oneDNN.
each_kernels = pytest.mark.parametrize("kernels", ["xla", "onednn"])


@pytest.fixture(autouse=True)
def onednn_at_every_size(monkeypatch):
  monkeypatch.setattr(layers, "ONEDNN_MIN_CONV_FLOPS", 0)
  monkeypatch.setattr(layers, "ONEDNN_MIN_BATCH_NORM_ELEMENTS", 0)


def test_tiny_layers_stay_on_xla_and_large_ones_reach_onednn(monkeypatch):
  monkeypatch.setattr(layers, "ONEDNN_MIN_CONV_FLOPS", 2**24)
  conv = Conv1x1(64, kernels="onednn")
  lowered = lambda shape: jax.jit(lambda x: conv.init_with_output(jax.random.key(0), x)[0]).lower(
    jnp.zeros(shape)
  )
  # 2 x 8 x 8 x 64 x 64 x 2 = 1 MFLOP stays on XLA; 16 x 64 x 64 x 64 x 64 x 2 = 537 MFLOP not.
  assert "msm_conv" not in lowered((2, 8, 8, 64)).as_text()
  if onednn.available():
    assert "msm_conv" in lowered((16, 64, 64, 64)).as_text()


@each_kernels
def test_deconv_matches_conv_transpose(kernels):
  x = _random(0, (2, 5, 6, 3))
  reference = nn.ConvTranspose(4, (2, 2), strides=(2, 2))
  params = _randomise(reference.init(jax.random.PRNGKey(1), x)["params"], seed=10)
  expected = _values_and_gradients(reference, {"params": params}, x)
  actual = _values_and_gradients(Deconv2x2(4, kernels=kernels), {"params": params}, x)
  assert actual[0].shape == (2, 10, 12, 4)
  _assert_close(actual, expected)


@each_kernels
def test_deconv_paints_each_pixel_into_a_2x2_block(kernels):
  # One input pixel of value 1 at (0, 0), one channel in and out: the output block
  # (i, j) holds kernel[1 - i, 1 - j] (lax correlates with the dilated input).
  x = jnp.zeros((1, 2, 2, 1)).at[0, 0, 0, 0].set(1.0)
  kernel = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1, 1)
  params = {"kernel": kernel, "bias": jnp.zeros(1)}
  y = Deconv2x2(1, kernels=kernels).apply({"params": params}, x)[0, :, :, 0]
  np.testing.assert_array_equal(y, [[4, 3, 0, 0], [2, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


@each_kernels
def test_conv1x1_matches_conv(kernels):
  x = _random(2, (2, 4, 3, 5))
  reference = nn.Conv(7, (1, 1))
  params = _randomise(reference.init(jax.random.PRNGKey(1), x)["params"], seed=20)
  _assert_close(
    _values_and_gradients(Conv1x1(7, kernels=kernels), {"params": params}, x),
    _values_and_gradients(reference, {"params": params}, x),
  )


POOLS = [max_pool_2x2, max_pool_2x2_corners]


@pytest.mark.parametrize("pool", POOLS)
def test_max_pool_matches_flax_max_pool(pool):
  x = _random(3, (2, 6, 4, 3))  # continuous values: every window has a unique maximum

  def loss(pool, x):
    return jnp.sum(pool(x) * _random(4, (2, 3, 2, 3)))

  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(pool(x), flax_pool(x))
  np.testing.assert_array_equal(jax.grad(loss, 1)(pool, x), jax.grad(loss, 1)(flax_pool, x))


@pytest.mark.parametrize("pool", POOLS)
def test_max_pool_hand_case_and_ties(pool):
  x = jnp.array([[1.0, 5.0, 2.0, 2.0], [3.0, 4.0, 0.0, 1.0]]).reshape(1, 2, 4, 1)
  np.testing.assert_array_equal(pool(x).ravel(), [5.0, 2.0])
  grad = jax.grad(lambda x: jnp.sum(pool(x)))(x).reshape(2, 4)
  # The unique maximum 5 takes the whole gradient; the tied 2s share it (documented).
  np.testing.assert_array_equal(grad, [[0, 1, 0.5, 0.5], [0, 0, 0, 0]])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_corner_max_pool_equals_the_reshaped_one_with_many_ties(dtype):
  # Values from {0, 1, 2}: most windows hold tied maxima, whose gradient both pools share
  # out equally (float32 division by the count, rounded once to the dtype): bit for bit.
  x = jnp.asarray(np.random.default_rng(5).integers(0, 3, (2, 8, 6, 4)), dtype)
  weights = jnp.asarray(np.random.default_rng(6).normal(size=(2, 4, 3, 4)), dtype)

  def loss(pool, x):
    return jnp.sum((pool(x) * weights).astype(jnp.float32))

  np.testing.assert_array_equal(max_pool_2x2_corners(x), max_pool_2x2(x))
  grad = jax.grad(loss, 1)(max_pool_2x2_corners, x)
  assert grad.dtype == dtype
  np.testing.assert_array_equal(grad, jax.grad(loss, 1)(max_pool_2x2, x))


def test_onednn_kernels_pool_large_float_maps_at_the_corners_and_keep_jvp_elsewhere(monkeypatch):
  monkeypatch.setattr(layers, "ONEDNN_MIN_BATCH_NORM_ELEMENTS", 2**18)
  pool = layers.kernels("onednn").max_pool
  large = jnp.ones((1, 64, 64, 64), jnp.bfloat16)  # 2^18 elements
  with pytest.raises(TypeError, match="custom_vjp"):
    jax.jvp(pool, (large,), (large,))
  small = _random(7, (1, 8, 8, 4))
  tangent = _random(8, (1, 8, 8, 4))
  np.testing.assert_array_equal(
    jax.jvp(pool, (small,), (tangent,))[1], jax.jvp(max_pool_2x2, (small,), (tangent,))[1]
  )
  np.testing.assert_array_equal(pool(large), max_pool_2x2(large))


@pytest.mark.parametrize("pool", POOLS)
def test_max_pool_rejects_odd_sizes(pool):
  with pytest.raises(ValueError, match="even H and W"):
    pool(jnp.zeros((1, 5, 4, 2)))


def _flax_batch_norm_relu():
  class Reference(nn.Module):
    @nn.compact
    def __call__(self, x, use_running_average):
      return nn.relu(nn.BatchNorm(momentum=0.9, epsilon=1e-5)(x, use_running_average))

  return Reference()


@each_kernels
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_relu_matches_flax(train, kernels):
  x = _random(5, (4, 3, 5, 6), scale=2.0, offset=0.7)
  reference = _flax_batch_norm_relu()
  params = {"BatchNorm_0": {"scale": _random(6, (6,), 0.5, 1.0), "bias": _random(7, (6,), 0.5)}}
  batch_stats = {"BatchNorm_0": {"mean": _random(8, (6,)), "var": _random(9, (6,)) ** 2 + 0.1}}
  mutable = ["batch_stats"] if train else False

  expected_y, expected_stats = reference.apply(
    {"params": params, "batch_stats": batch_stats},
    x,
    use_running_average=not train,
    mutable=["batch_stats"],
  )
  ours = {"params": params["BatchNorm_0"], "batch_stats": batch_stats["BatchNorm_0"]}
  actual_y, actual_stats = BatchNormReLU(kernels=kernels).apply(
    ours, x, use_running_average=not train, mutable=["batch_stats"]
  )
  _assert_close(actual_y, expected_y)
  _assert_close(actual_stats["batch_stats"], expected_stats["batch_stats"]["BatchNorm_0"])

  def strip(output):
    return output[0] if mutable else output

  weights = _random(10, x.shape)
  expected_grads = jax.grad(
    lambda p, x: jnp.sum(
      strip(
        reference.apply(
          {"params": p, "batch_stats": batch_stats},
          x,
          use_running_average=not train,
          mutable=mutable,
        )
      )
      * weights
    ),
    argnums=(0, 1),
  )(params, x)
  actual_grads = jax.grad(
    lambda p, x: jnp.sum(
      strip(
        BatchNormReLU(kernels=kernels).apply(
          {"params": p, "batch_stats": ours["batch_stats"]},
          x,
          use_running_average=not train,
          mutable=mutable,
        )
      )
      * weights
    ),
    argnums=(0, 1),
  )(ours["params"], x)
  _assert_close(actual_grads[0], expected_grads[0]["BatchNorm_0"], rtol=1e-4, atol=1e-5)
  _assert_close(actual_grads[1], expected_grads[1], rtol=1e-4, atol=1e-5)


def test_batch_norm_relu_gradient_through_statistics():
  # A loss that also uses the returned batch mean and variance: the hand-written
  # gradient must match autodiff of a plain two-pass implementation.
  x = _random(11, (3, 4, 4, 5), scale=1.5, offset=-0.3)
  scale, bias = _random(12, (5,), 0.3, 1.0), _random(13, (5,), 0.3)

  def plain(x, scale, bias):
    mean = jnp.mean(x, (0, 1, 2))
    var = jnp.mean((x - mean) ** 2, (0, 1, 2))
    return jax.nn.relu((x - mean) / jnp.sqrt(var + 1e-5) * scale + bias), mean, var

  def loss(function, x, scale, bias):
    y, mean, var = function(x, scale, bias)
    return jnp.sum(y * jnp.cos(x)) + jnp.sum(mean**3) + jnp.sum(jnp.sqrt(var))

  fused = lambda x, s, b: batch_norm_relu_train(x, s, b, 1e-5, jnp.float32)
  _assert_close(
    jax.grad(loss, (1, 2, 3))(fused, x, scale, bias),
    jax.grad(loss, (1, 2, 3))(plain, x, scale, bias),
    rtol=1e-4,
    atol=1e-5,
  )


def test_bfloat16_compute_keeps_float32_parameters():
  x = _random(14, (2, 4, 4, 3)).astype(jnp.bfloat16)
  for module in (
    Deconv2x2(5, dtype=jnp.bfloat16),
    Conv1x1(5, dtype=jnp.bfloat16),
    BatchNormReLU(dtype=jnp.bfloat16),
  ):
    kwargs = {"use_running_average": False} if isinstance(module, BatchNormReLU) else {}
    variables = module.init(jax.random.PRNGKey(0), x, **kwargs)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
    output = module.apply(variables, x, mutable=["batch_stats"], **kwargs)[0]
    assert output.dtype == jnp.bfloat16
    grad_x = jax.grad(
      lambda x: jnp.sum(
        module.apply(variables, x, mutable=["batch_stats"], **kwargs)[0].astype(jnp.float32)
      )
    )(x)
    assert grad_x.dtype == jnp.bfloat16


def test_a_registered_kernel_set_is_used_by_name(monkeypatch):
  from configs import base
  from msm_jax import models
  from msm_jax.models.hourglass import StackedHourglass

  calls = []

  def counting_convolution(x, kernel, bias, strides, padding, relu=False):
    calls.append(kernel.shape)
    return layers.xla_convolution(x, kernel, bias, strides, padding, relu)

  monkeypatch.setitem(
    layers.KERNELS, "counting", layers.Kernels(counting_convolution, batch_norm_relu_train)
  )
  config = base.get_config()
  config.hourglass.kernels = "counting"
  assert models.landmark_network(config, "hourglass", 68).kernels == "counting"

  kwargs = dict(num_landmarks=3, width=8, depth=1, stem_widths=(4, 4, 8))
  images = _random(11, (1, 16, 16, 3))
  variables = StackedHourglass(**kwargs).init(jax.random.key(0), images)
  expected = StackedHourglass(**kwargs).apply(variables, images)
  got = StackedHourglass(**kwargs, kernels="counting").apply(variables, images)
  np.testing.assert_array_equal(got, expected)
  # Every convolution went through it: 3 stem convs; 3 per residual unit x 11 units (the
  # stem's, and per stack skip, down, bottom, up, head); per stack a deconv, the head's two
  # 1x1s; the two 1x1s back into the second stack.
  assert len(calls) == 3 + 3 * 11 + 2 * (1 + 2) + 2
  with pytest.raises(ValueError, match="expected one of"):
    layers.kernels("nonexistent")


class _ConvThenNorm(nn.Module):
  """A 3x3 Conv or a Conv1x1, then a BatchNormReLU, through ``conv_batch_norm_relu``."""

  conv_kind: str
  kernels: str

  @nn.compact
  def __call__(self, x, train: bool):
    if self.conv_kind == "3x3":
      conv = layers.Conv(5, (3, 3), dtype=jnp.float64, kernels=self.kernels)
    else:
      conv = Conv1x1(5, dtype=jnp.float64, kernels=self.kernels)
    norm = BatchNormReLU(dtype=jnp.float64, kernels=self.kernels)
    return layers.conv_batch_norm_relu(conv, norm, x, train)


@pytest.mark.parametrize("conv_kind", ["3x3", "1x1"])
def test_folded_batch_norm_equals_the_unfolded_one(conv_kind, monkeypatch):
  """In inference mode, folding the BN into the convolution (kernel x scale / sqrt(var + eps),
  bias x that + bias - mean x that, ReLU fused) gives the BN's function: float64 outputs and
  gradients (parameters, statistics' inputs, x) equal the unfolded layers to float64
  rounding; in training mode nothing is folded (the BN needs the batch statistics)."""
  calls = []

  def recording_convolution(x, kernel, bias, strides, padding, relu=False):
    calls.append(relu)
    return layers.xla_convolution(x, kernel, bias, strides, padding, relu)

  folding = layers.Kernels(recording_convolution, batch_norm_relu_train, fold_batch_norm=True)
  monkeypatch.setitem(layers.KERNELS, "folding", folding)
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 6, 4)))
    variables = _ConvThenNorm(conv_kind, "xla").init(jax.random.key(0), x, train=False)
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda v: v + rng.uniform(0.1, 0.9, v.shape), variables)
    unfolded = _values_and_gradients(_ConvThenNorm(conv_kind, "xla"), variables, x, train=False)
    calls.clear()
    folded = _values_and_gradients(_ConvThenNorm(conv_kind, "folding"), variables, x, train=False)
    assert calls and all(calls)  # one fused convolution per application, no separate BN
    assert 0.2 < np.mean(np.asarray(folded[0]) > 0) < 0.8
    _assert_close(folded, unfolded, rtol=1e-12, atol=1e-12)
    calls.clear()
    _ConvThenNorm(conv_kind, "folding").apply(variables, x, train=True, mutable=["batch_stats"])
    assert calls == [False]


def test_auto_kernels_are_xla_off_the_cpu_and_onednn_on_it_where_built(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert layers.resolve_kernels("auto") == "xla"
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert layers.resolve_kernels("auto") == "xla"
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert layers.resolve_kernels("auto") == ("onednn" if onednn.available() else "xla")
  monkeypatch.setattr(onednn, "available", lambda: False)
  assert layers.resolve_kernels("auto") == "xla"
  # A name other than "auto" is taken as it is, on any backend.
  assert layers.resolve_kernels("onednn") == "onednn"

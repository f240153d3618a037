"""The oneDNN convolutions (msm_jax/kernels/onednn.py) against a float64 NumPy convolution:
values, input gradient and kernel gradient, in float32 and bfloat16, with worst-case rounding
bounds; the fallbacks to XLA; the hourglass built on them.

Bounds: a float32 sum of n products is within gamma_n * sum|terms| of the exact sum (gamma_n =
n u / (1 - n u), u = 2^-24), whatever the order or blocking of the sum (oneDNN's and XLA's
differ by CPU). bfloat16 operands multiply exactly in float32 and are summed there, and the
result is rounded once to bfloat16: + 2^-8 |exact|. A wrong index, tap or transpose is off by
O(sum|terms|), far outside these bounds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from msm_jax.kernels import onednn
from msm_jax.models import layers
from msm_jax.models.hourglass import StackedHourglass

F32_UNIT = 2.0**-24
BF16_UNIT = 2.0**-8
NHWC = ("NHWC", "HWIO", "NHWC")
# (batch, height, width, in channels, out channels, kernel, strides, padding)
GEOMETRIES = [
  (2, 16, 16, 32, 24, 3, (1, 1), ((1, 1), (1, 1))),  # the hourglass's 3x3
  (2, 8, 8, 64, 48, 1, (1, 1), ((0, 0), (0, 0))),  # its 1x1
  (3, 13, 11, 3, 16, 3, (1, 1), ((1, 1), (1, 1))),  # the stem: 3 channels, odd sizes
  (2, 15, 12, 8, 16, 3, (2, 2), ((1, 1), (1, 1))),  # ResNet's stride-2 3x3
  (1, 9, 10, 4, 5, 3, (1, 2), ((0, 2), (1, 0))),  # asymmetric padding and strides
]


def _conv64(x, kernel, strides, padding):
  """Float64 correlation, NHWC x HWIO -> NHWC, as a sum over the kernel taps."""
  (top, bottom), (left, right) = padding
  x = np.pad(np.asarray(x, np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
  kernel = np.asarray(kernel, np.float64)
  k_h, k_w = kernel.shape[:2]
  out_h = (x.shape[1] - k_h) // strides[0] + 1
  out_w = (x.shape[2] - k_w) // strides[1] + 1
  out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
  for i in range(k_h):
    for j in range(k_w):
      window = x[
        :, i : i + strides[0] * out_h : strides[0], j : j + strides[1] * out_w : strides[1]
      ]
      out += window @ kernel[i, j]
  return out


def _conv64_vjp(x, kernel, grad_y, strides, padding):
  """Float64 input and kernel gradients of ``_conv64`` for the output cotangent ``grad_y``."""
  (top, bottom), (left, right) = padding
  x = np.asarray(x, np.float64)
  kernel = np.asarray(kernel, np.float64)
  grad_y = np.asarray(grad_y, np.float64)
  padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  grad_padded = np.zeros_like(padded)
  grad_kernel = np.zeros_like(kernel)
  out_h, out_w = grad_y.shape[1:3]
  for i in range(kernel.shape[0]):
    for j in range(kernel.shape[1]):
      rows = slice(i, i + strides[0] * out_h, strides[0])
      cols = slice(j, j + strides[1] * out_w, strides[1])
      grad_padded[:, rows, cols] += grad_y @ kernel[i, j].T
      grad_kernel[i, j] = np.einsum("bhwc,bhwd->cd", padded[:, rows, cols], grad_y)
  height, width = x.shape[1:3]
  return grad_padded[:, top : top + height, left : left + width], grad_kernel


def _gamma(num_terms):
  return num_terms * F32_UNIT / (1 - num_terms * F32_UNIT)


def _assert_within(got, exact, magnitude, num_terms, dtype, roundings=1):
  """|got - exact| <= gamma_n * magnitude, + one bfloat16 rounding of the result (more:
  ``roundings`` - 1 roundings of intermediates as large as ``magnitude``)."""
  got = np.asarray(jnp.asarray(got, jnp.float32), np.float64)
  bound = _gamma(num_terms) * magnitude
  if dtype == jnp.bfloat16:
    bound = bound + BF16_UNIT * (np.abs(exact) + (roundings - 1) * magnitude)
  excess = np.abs(got - exact) - bound
  assert excess.max() <= 0, f"max error beyond the bound: {excess.max()} (bound {bound.max()})"


def _operands(geometry, dtype, seed=0):
  batch, height, width, cin, cout, size, strides, padding = geometry
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((batch, height, width, cin)), dtype)
  kernel = jnp.asarray(rng.standard_normal((size, size, cin, cout)) / size, dtype)
  bias = jnp.asarray(rng.standard_normal(cout), dtype)
  return x, kernel, bias, strides, padding


def test_extension_loads_where_the_wheels_exist():
  if not onednn.WHEEL_PLATFORM:
    pytest.skip("the oneDNN wheels exist for Linux x86_64 only")
  assert onednn.available(), onednn.unavailable_reason()


needs_onednn = pytest.mark.skipif(not onednn.available(), reason=onednn.unavailable_reason())


@pytest.fixture(params=["cpu", "other platforms"])
def branch(request, monkeypatch):
  """Each kernel's two lowerings: the oneDNN custom call (CPU) and the XLA ops every other
  platform gets (chosen here by running the ``default`` branch of ``platform_dependent``;
  its float32 cases carry the wiring checks, its bfloat16 ones XLA's looser rounding)."""
  if request.param == "other platforms":
    monkeypatch.setattr(
      onednn.lax, "platform_dependent", lambda *args, cpu, default: default(*args)
    )
  return request.param


@needs_onednn
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[5]}x{g[5]}s{g[6]}p{g[7]}")
def test_values_and_gradients_against_float64(geometry, dtype, branch):
  x, kernel, bias, strides, padding = _operands(geometry, dtype)
  # XLA's bfloat16 convolution (other platforms) rounds the product before the bias is added
  # and may round partial sums: one more rounding, as large as the terms.
  within = functools.partial(_assert_within, roundings=1 if branch == "cpu" else 2)
  conv = lambda a, b, c: onednn.conv2d(a, b, c, strides, padding)
  y, vjp = jax.vjp(conv, x, kernel, bias)
  assert y.dtype == dtype
  k_h, k_w, cin, cout = kernel.shape
  bias64 = np.asarray(bias, np.float64)
  within(
    y,
    _conv64(x, kernel, strides, padding) + bias64,
    _conv64(np.abs(x), np.abs(kernel), strides, padding) + np.abs(bias64),
    k_h * k_w * cin + 1,
    dtype,
  )

  grad_y = jnp.asarray(np.random.default_rng(1).standard_normal(y.shape), dtype)
  grad_x, grad_kernel, grad_bias = vjp(grad_y)
  assert grad_x.dtype == grad_kernel.dtype == grad_bias.dtype == dtype
  exact_x, exact_kernel = _conv64_vjp(x, kernel, grad_y, strides, padding)
  magnitude_x, magnitude_kernel = _conv64_vjp(
    np.abs(x), np.abs(kernel), np.abs(grad_y), strides, padding
  )
  pixels = y.shape[0] * y.shape[1] * y.shape[2]
  grad_y64 = np.asarray(grad_y, np.float64)
  within(grad_x, exact_x, magnitude_x, k_h * k_w * cout, dtype)
  within(grad_kernel, exact_kernel, magnitude_kernel, pixels, dtype)
  within(grad_bias, grad_y64.sum((0, 1, 2)), np.abs(grad_y64).sum((0, 1, 2)), pixels, dtype)


@needs_onednn
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize(
  "geometry", [GEOMETRIES[0], GEOMETRIES[1], GEOMETRIES[4]], ids=["3x3", "1x1", "asymmetric"]
)
def test_fused_relu_against_float64(geometry, dtype, branch):
  """relu=True: max(conv + bias, 0) within the same bound (ReLU does not enlarge errors); the
  gradients are those of the convolution for the output gradient masked where the returned
  output is positive (jax.nn.relu's rule), so a mask taken from the wrong side fails."""
  x, kernel, bias, strides, padding = _operands(geometry, dtype, seed=3)
  within = functools.partial(_assert_within, roundings=1 if branch == "cpu" else 2)
  conv = lambda a, b, c: onednn.conv2d(a, b, c, strides, padding, relu=True)
  y, vjp = jax.vjp(conv, x, kernel, bias)
  assert y.dtype == dtype
  k_h, k_w, cin, _ = kernel.shape
  bias64 = np.asarray(bias, np.float64)
  exact = _conv64(x, kernel, strides, padding) + bias64
  assert 0.2 < np.mean(exact > 0) < 0.8  # both sides of the ReLU are exercised
  magnitude = _conv64(np.abs(x), np.abs(kernel), strides, padding) + np.abs(bias64)
  within(y, np.maximum(exact, 0), magnitude, k_h * k_w * cin + 1, dtype)

  grad_y = jnp.asarray(np.random.default_rng(4).standard_normal(y.shape), dtype)
  grad_x, grad_kernel, grad_bias = vjp(grad_y)
  passed = np.where(np.asarray(y, np.float32) > 0, np.asarray(grad_y, np.float64), 0.0)
  exact_x, exact_kernel = _conv64_vjp(x, kernel, passed, strides, padding)
  magnitude_x, magnitude_kernel = _conv64_vjp(
    np.abs(x), np.abs(kernel), np.abs(passed), strides, padding
  )
  pixels = y.shape[0] * y.shape[1] * y.shape[2]
  within(grad_x, exact_x, magnitude_x, k_h * k_w * kernel.shape[3], dtype)
  within(grad_kernel, exact_kernel, magnitude_kernel, pixels, dtype)
  within(grad_bias, passed.sum((0, 1, 2)), np.abs(passed).sum((0, 1, 2)), pixels, dtype)


@needs_onednn
def test_flax_conv_takes_it_and_custom_calls_appear_only_where_supported():
  x, kernel, _, strides, padding = _operands(GEOMETRIES[0], jnp.float32)
  numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, NHWC)
  call = lambda **kw: jax.jit(
    lambda a, b: onednn.conv_general_dilated(
      a, b, strides, padding, dimension_numbers=numbers, **kw
    )
  )
  assert "msm_conv_forward" in call().lower(x, kernel).as_text()
  exact = _conv64(x, kernel, strides, padding)
  np.testing.assert_allclose(call()(x, kernel), exact, atol=1e-3)
  # Not supported: kernel dilation, float16, NCHW. These are lax's convolution itself.
  unsupported = [
    (call(rhs_dilation=(2, 2)), x, kernel),
    (call(), x.astype(jnp.float16), kernel.astype(jnp.float16)),
    (
      jax.jit(lambda a, b: onednn.conv_general_dilated(a, b, strides, padding)),
      x.transpose(0, 3, 1, 2),
      kernel.transpose(3, 2, 0, 1),
    ),
  ]
  for function, a, b in unsupported:
    assert "msm_conv" not in function.lower(a, b).as_text()


@needs_onednn
def test_other_platforms_lower_to_xla():
  x, kernel, bias, strides, padding = _operands(GEOMETRIES[0], jnp.float32)

  def loss(a, b, c):
    return jnp.sum(onednn.conv2d(a, b, c, strides, padding) ** 2)

  gradients = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  exported = jax.export.export(gradients, platforms=["cuda"])(x, kernel, bias)
  assert "msm_conv" not in exported.mlir_module()
  with pytest.raises(ValueError, match="custom call"):
    jax.export.export(jax.jit(loss), platforms=["cpu"])(x, kernel, bias)


@needs_onednn
def test_float64_and_vmap():
  x, kernel, bias, strides, padding = _operands(GEOMETRIES[0], jnp.float32)
  with jax.enable_x64(True):
    x64, kernel64 = x.astype(jnp.float64), kernel.astype(jnp.float64)
    assert not onednn.supports(x64, kernel64)
  batched = jax.vmap(lambda a: onednn.conv2d(a, kernel, bias, strides, padding))(x[:, None])
  bias64 = np.asarray(bias, np.float64)
  _assert_within(
    batched[:, 0],
    _conv64(x, kernel, strides, padding) + bias64,
    _conv64(np.abs(x), np.abs(kernel), strides, padding) + np.abs(bias64),
    9 * x.shape[-1] + 1,
    jnp.float32,
  )


@needs_onednn
def _randomised(variables, seed):
  """Every parameter and BN statistic drawn at random (variances in [0.5, 1.5]), so that two
  layers swapped by name would change the outputs: the initial BNs are all the identity."""
  leaves, treedef = jax.tree.flatten_with_path(variables)
  rng = np.random.default_rng(seed)
  values = []
  for path, leaf in leaves:
    if jax.tree_util.keystr(path).endswith("['var']"):
      values.append(jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype))
    else:
      values.append(leaf + jnp.asarray(0.2 * rng.standard_normal(leaf.shape), leaf.dtype))
  return jax.tree.unflatten(treedef, values)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_hourglass_on_onednn_matches_xla(dtype, monkeypatch):
  """Same (random) variables, inference mode; heatmaps and the gradient of a loss no further
  from the float64 network than XLA's own result in that dtype is (x 4): every layer is wired
  the same way, and the BNs oneDNN folds into the convolutions before them are the right ones
  (the size thresholds that keep tiny layers on XLA are lifted)."""
  monkeypatch.setattr(layers, "ONEDNN_MIN_CONV_FLOPS", 0)
  monkeypatch.setattr(layers, "ONEDNN_MIN_BATCH_NORM_ELEMENTS", 0)
  kwargs = dict(num_landmarks=5, width=16, depth=2, stem_widths=(8, 8, 16))
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  variables = _randomised(
    StackedHourglass(**kwargs).init(jax.random.key(1), images, train=False), seed=3
  )
  weights = jax.random.normal(jax.random.key(2), (2, 2, 16, 16, 5))

  def outputs(dtype, kernels):
    network = StackedHourglass(**kwargs, dtype=dtype, kernels=kernels)
    cast = lambda tree: jax.tree.map(
      lambda v: v.astype(jnp.promote_types(dtype, jnp.float32)), tree
    )

    def loss(params):
      maps = network.apply({**cast(variables), "params": params}, images, train=False)
      return jnp.sum(maps * weights), maps

    (_, maps), grads = jax.value_and_grad(loss, has_aux=True)(cast(variables)["params"])
    return np.asarray(maps, np.float64), jax.tree.map(lambda g: np.asarray(g, np.float64), grads)

  with jax.enable_x64(True):
    exact_maps, exact_grads = outputs(jnp.float64, "xla")
  xla_maps, xla_grads = outputs(dtype, "xla")
  onednn_maps, onednn_grads = outputs(dtype, "onednn")
  assert jax.tree.structure(onednn_grads) == jax.tree.structure(exact_grads)
  for got, xla, exact in [(onednn_maps, xla_maps, exact_maps)] + list(
    zip(jax.tree.leaves(onednn_grads), jax.tree.leaves(xla_grads), jax.tree.leaves(exact_grads))
  ):
    floor = 16 * jnp.finfo(dtype).eps * np.abs(exact).max()
    assert np.abs(got - exact).max() <= 4 * np.abs(xla - exact).max() + floor


def _batch_norm_relu64(x, scale, shift, epsilon):
  """Plain float64 training-mode BN + ReLU over all but the last axis (biased variance)."""
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.mean((x - mean) ** 2, axes)
  return jax.nn.relu((x - mean) / jnp.sqrt(var + epsilon) * scale + shift), mean, var


@needs_onednn
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_batch_norm_relu_against_float64(dtype, branch):
  """Outputs, statistics and the gradients of a loss that reads all three (so the statistics'
  own gradients are exercised) against float64 autodiff of the formula. Each value is a few
  operations on statistics summed over n rows: within 8 n u of the largest exact value
  (u = float32's unit roundoff), plus the roundings of the result to bfloat16."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((4, 6, 5, 16)) * 2 + 0.5
  scale, shift = rng.standard_normal(16) * 0.5 + 1, rng.standard_normal(16) * 0.5
  weights = [rng.standard_normal(x.shape), rng.standard_normal(16), rng.standard_normal(16)]
  x = np.asarray(jnp.asarray(x, dtype).astype(jnp.float32), np.float64)  # representable

  def loss(function, x, scale, shift):
    outputs = function(x, scale, shift, 1e-5)
    return sum(
      jnp.sum(o.astype(jnp.promote_types(o.dtype, jnp.float32)) * w)
      for o, w in zip(outputs, weights)
    )

  with jax.enable_x64(True):
    exact = _batch_norm_relu64(jnp.asarray(x), scale, shift, 1e-5)
    # The kernel receives y's cotangent in y's dtype: the reference gets it rounded the same way.
    weights_seen = [np.asarray(jnp.asarray(weights[0], dtype).astype(jnp.float32), np.float64)]
    weights, original = weights_seen + weights[1:], weights
    exact_grads = jax.grad(functools.partial(loss, _batch_norm_relu64), (0, 1, 2))(x, scale, shift)
    weights = original
  operands = (
    jnp.asarray(x, dtype),
    jnp.asarray(scale, jnp.float32),
    jnp.asarray(shift, jnp.float32),
  )
  got = onednn.batch_norm_relu(*operands, 1e-5)
  got_grads = jax.grad(functools.partial(loss, onednn.batch_norm_relu), (0, 1, 2))(*operands)
  assert got[0].dtype == got_grads[0].dtype == dtype
  rows = x.size // x.shape[-1]
  for value, reference, rounded in zip(
    list(got) + list(got_grads),
    list(exact) + list(exact_grads),
    [True, False, False, True, False, False],
  ):
    reference = np.asarray(reference)
    bound = 8 * rows * F32_UNIT * np.abs(reference).max()
    if rounded and dtype == jnp.bfloat16:
      # x's gradient is rounded twice when the statistics' gradients are added to it.
      bound = bound + 2 * BF16_UNIT * np.abs(reference).max()
    error = np.abs(np.asarray(jnp.asarray(value, jnp.float32), np.float64) - reference)
    assert (error <= bound).all(), f"max error {error.max()} beyond bound {np.max(bound)}"

"""msm_jax/kernels/xla.py: the reference formulas against numpy written out by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.kernels import xla as xla_kernels


def _numpy_convolution(x, kernel, bias, stride, pad):
  """Direct sum over taps and channels in float64."""
  x = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw, _, cout = kernel.shape
  out_h = (x.shape[1] - kh) // stride + 1
  out_w = (x.shape[2] - kw) // stride + 1
  y = np.zeros((x.shape[0], out_h, out_w, cout))
  for i in range(kh):
    for j in range(kw):
      window = x[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride]
      y += window @ kernel[i, j].astype(np.float64)
  return y + bias


@pytest.mark.parametrize("kernel_size,stride,pad", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (2, 1, 0)])
@pytest.mark.parametrize("relu", [False, True])
def test_convolution_equals_the_direct_sum(kernel_size, stride, pad, relu):
  rng = np.random.default_rng(kernel_size + stride)
  x = rng.normal(size=(2, 8, 8, 5)).astype(np.float32)
  kernel = rng.normal(size=(kernel_size, kernel_size, 5, 4)).astype(np.float32)
  bias = rng.normal(size=4).astype(np.float32)
  padding = ((pad, pad), (pad, pad))
  y = xla_kernels.convolution(x, kernel, bias, (stride, stride), padding, relu)
  linear = _numpy_convolution(x, kernel, bias, stride, pad)
  # float32 sums of at most 45 products of unit normals (|sum| < 8 sigma): 45 x 8 eps.
  tolerance = 45 * 8 * np.finfo(np.float32).eps
  np.testing.assert_allclose(y, np.maximum(linear, 0) if relu else linear, atol=tolerance)
  without_bias = xla_kernels.convolution(x, kernel, None, (stride, stride), padding)
  np.testing.assert_allclose(without_bias, linear - bias, atol=tolerance)


def test_batch_statistics_are_the_biased_moments_per_channel():
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(4, 6, 6, 3)) * [1.0, 2.0, 0.5] + [0.0, 3.0, -1.0]).astype(np.float32)
  mean, var = xla_kernels.batch_statistics(jnp.asarray(x, jnp.bfloat16))
  assert mean.dtype == var.dtype == jnp.float32
  as_bf16 = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64).reshape(-1, 3)
  np.testing.assert_allclose(mean, as_bf16.mean(0), atol=1e-5)
  # E[x^2] - E[x]^2 in float32 cancels ~ eps * E[x^2] (E[x^2] <= 13 here).
  np.testing.assert_allclose(var, as_bf16.var(0), atol=13 * 144 * np.finfo(np.float32).eps)
  # A constant channel: the cancellation can go below zero; the variance is clipped at 0.
  _, constant_var = xla_kernels.batch_statistics(jnp.full((2, 3, 3, 1), 0.1, jnp.float32))
  assert float(constant_var[0]) >= 0.0

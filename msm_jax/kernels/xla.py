"""The XLA formulas the native kernels stand in for: a convolution with its bias and ReLU, and
BatchNorm's batch statistics. ``models/layers.py`` runs them as its "xla" kernels;
``kernels/onednn.py`` runs them off CPU and takes its results' shapes from them."""

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")


def convolution(x, kernel, bias, strides, padding, relu=False):
  """``conv(x, kernel) + bias`` (NHWC x HWIO; bias None: none), then ReLU if ``relu``; a 1x1
  stride-1 kernel runs as a matrix product over channels (XLA's 1x1 convolution is ~3x
  slower)."""
  if kernel.shape[:2] == (1, 1) and tuple(strides) == (1, 1) and not any(map(any, padding)):
    y = jnp.dot(x, kernel[0, 0])
  else:
    y = lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC)
  y = y if bias is None else y + bias
  return jnp.maximum(y, 0) if relu else y


def batch_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and biased variance of ``x [..., C]`` in float32, as ``nn.BatchNorm``
  computes them (E[x^2] - E[x]^2 in one pass, clipped at zero)."""
  axes = tuple(range(x.ndim - 1))
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axes)
  mean_of_squares = jnp.mean(x * x, axes)
  return mean, jnp.maximum(0.0, mean_of_squares - mean * mean)

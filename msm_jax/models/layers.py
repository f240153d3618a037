"""Drop-in layers whose gradients run at convolution speed on XLA:CPU.

The hourglass of Sec. III-B (Fig. 3) upsamples with 2x2 stride-2 "deconvolutions",
downsamples with 2x2 max-pooling and uses 1x1 convolutions in every residual unit
(Fig. 4). On XLA:CPU the plain Flax/lax forms of these three ops have slow gradients
(shared/notes/cpu_and_stack.md): the kernel gradient of a stride-2 ``nn.ConvTranspose``
runs at ~1 GFLOP/s, ``nn.max_pool``'s gradient is a select-and-scatter, and a 1x1
``nn.Conv`` is ~3x slower than the same matrix product. The layers here compute the
same functions as matrix products and reshapes, whose gradients are matrix products and
elementwise ops:

* ``Deconv2x2``: each input pixel paints a 2x2 block of the output, so the op is one
  einsum over channels plus a reshape. Same parameters (``kernel [2, 2, Cin, Cout]``,
  ``bias [Cout]``) and same outputs as ``nn.ConvTranspose(Cout, (2, 2), strides=(2, 2))``.
* ``Conv1x1``: a matrix product over channels. Same parameters
  (``kernel [1, 1, Cin, Cout]``) and outputs as ``nn.Conv(Cout, (1, 1))``.
* ``max_pool_2x2``: window maxima of a reshape, same values as
  ``nn.max_pool(x, (2, 2), strides=(2, 2))``.

``tests/test_layers.py`` proves each equal to the plain op in values and in gradients
with respect to input and kernel. All layers take ``[B, H, W, C]`` inputs.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class Deconv2x2(nn.Module):
  """2x2 transposed convolution with stride 2 (the "deconvolution" of Fig. 3).

  ``[B, H, W, Cin] -> [B, 2H, 2W, Cout]``. Output block (2h + i, 2w + j) is
  ``x[h, w] @ kernel[1 - i, 1 - j] + bias``: lax's transposed convolution (without
  ``transpose_kernel``) correlates the stride-dilated input with the kernel, so the
  kernel taps are met in reverse order.

  Attributes:
    features: output channels Cout.
    use_bias: add a learned bias per output channel.
    dtype: compute dtype (None: promote input and parameters).
    param_dtype: parameter dtype.
    kernel_init: initialiser of the ``[2, 2, Cin, Cout]`` kernel.
  """
  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"Deconv2x2 expects [B, H, W, C] inputs, got shape {x.shape}")
    kernel = self.param("kernel", self.kernel_init,
                        (2, 2, x.shape[-1], self.features), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    batch, height, width, _ = x.shape
    blocks = jnp.einsum("bhwc,ijcd->bhiwjd", x, kernel[::-1, ::-1])
    y = blocks.reshape(batch, 2 * height, 2 * width, self.features)
    if bias is not None:
      y = y + bias
    return y


class Conv1x1(nn.Module):
  """1x1 convolution as a matrix product over channels: ``[..., Cin] -> [..., Cout]``.

  Attributes:
    features: output channels Cout.
    use_bias: add a learned bias per output channel.
    dtype: compute dtype (None: promote input and parameters).
    param_dtype: parameter dtype.
    kernel_init: initialiser of the ``[1, 1, Cin, Cout]`` kernel (``nn.Conv``'s layout).
  """
  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init,
                        (1, 1, x.shape[-1], self.features), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jnp.dot(x, kernel[0, 0])
    if bias is not None:
      y = y + bias
    return y


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pooling with stride 2: ``[B, H, W, C] -> [B, H/2, W/2, C]`` (H, W even).

  Where a window holds several equal maxima the gradient is shared among them
  (``jnp.max``'s rule) rather than given to the first one (``nn.max_pool``'s
  select-and-scatter); the two agree wherever the window maximum is unique.
  """
  if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"max_pool_2x2 expects [B, H, W, C] with even H and W, got {x.shape}")
  batch, height, width, channels = x.shape
  windows = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
  return jnp.max(windows, axis=(2, 4))

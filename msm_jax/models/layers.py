"""Drop-in layers whose gradients run at convolution speed on XLA:CPU.

The hourglass of Sec. III-B (Fig. 3) upsamples with 2x2 stride-2 "deconvolutions",
downsamples with 2x2 max-pooling and uses 1x1 convolutions in every residual unit
(Fig. 4). On XLA:CPU the plain Flax/lax forms of these three ops have slow gradients
(docs/cpu_notes.md): the kernel gradient of a stride-2 ``nn.ConvTranspose`` is a slow
generic convolution, ``nn.max_pool``'s gradient is a select-and-scatter, and a 1x1
``nn.Conv`` is slower than the same matrix product. The layers here compute the
same functions as matrix products and reshapes, whose gradients are matrix products and
elementwise ops:

* ``Deconv2x2``: each input pixel paints a 2x2 block of the output, so the op is one
  product over channels (to the 4 x Cout taps) plus a transpose. Same parameters
  (``kernel [2, 2, Cin, Cout]``, ``bias [Cout]``) and same outputs as
  ``nn.ConvTranspose(Cout, (2, 2), strides=(2, 2))``.
* ``Conv1x1``: a matrix product over channels. Same parameters
  (``kernel [1, 1, Cin, Cout]``) and outputs as ``nn.Conv(Cout, (1, 1))``.
* ``max_pool_2x2``: window maxima of a reshape, same values as
  ``nn.max_pool(x, (2, 2), strides=(2, 2))``; ``max_pool_2x2_corners`` the same from the
  windows' four strided corners with a faster hand-written gradient (the "onednn" kernels).
* ``BatchNormReLU``: ``nn.BatchNorm`` then ReLU with a hand-written gradient that reads
  the activations twice instead of materialising XLA's chain of intermediates. Same
  parameters, statistics and outputs as ``nn.relu(nn.BatchNorm(...)(x))``.

``tests/test_layers.py`` proves each equal to the plain op in values and in gradients
with respect to input and kernel. All layers take ``[B, H, W, C]`` inputs.

The plain Flax layers take several times as long in a training step on XLA:CPU; two
process-level settings matter as much (the YNN fusion flag for training, an allocator that
reuses freed pages), which only an entry script can set before JAX starts (``msm_jax/cli.py``).
What each of these gains is in ``docs/cpu_notes.md``; with XLA's kernels bfloat16 compute does
not pay on CPU, with oneDNN's it does.

``KERNELS`` names the kernels the layers run: "xla" (``lax``, ``jnp.dot`` and the BN + ReLU
below) or "onednn" (``msm_jax/kernels/onednn.py``: oneDNN's convolutions and training-mode
BN + ReLU through XLA FFI on CPU, faster there in bfloat16; the same functions as "xla"
wherever they cannot run). ``Conv`` (nn.Conv's parameters), ``Conv1x1``, ``Deconv2x2`` (its
four taps as one 1x1 convolution with 4 x Cout outputs) and ``BatchNormReLU`` take the name;
oneDNN adds the bias inside the convolution and computes its gradient in the kernel-gradient
pass. ``conv_batch_norm_relu`` folds an inference-mode BN + ReLU into the convolution before
it where the kernels say so (``Kernels.fold_batch_norm``: "onednn").
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from msm_jax.kernels import onednn
from msm_jax.kernels import xla as xla_kernels

Dtype = Any

xla_convolution = xla_kernels.convolution


# Below these sizes a oneDNN call's fixed cost (~0.1-0.2 ms: dispatch, kernel reorder) exceeds
# what its faster kernel saves, so tiny layers (tests, toy models) stay on XLA.
ONEDNN_MIN_CONV_FLOPS = 2**24
ONEDNN_MIN_BATCH_NORM_ELEMENTS = 2**18


def onednn_convolution(x, kernel, bias, strides, padding, relu=False):
  """``xla_convolution`` through oneDNN's kernels (bias and ReLU fused) where they can run and
  the layer is large enough to gain."""
  flops = 2 * x.size * kernel.shape[0] * kernel.shape[1] * kernel.shape[3]  # ~, at stride 1
  flops //= strides[0] * strides[1]
  if x.ndim != 4 or flops < ONEDNN_MIN_CONV_FLOPS or not onednn.supports(x, kernel):
    return xla_convolution(x, kernel, bias, strides, padding, relu)
  bias = jnp.zeros(kernel.shape[-1], x.dtype) if bias is None else bias
  return onednn.conv2d(x, kernel, bias, tuple(strides), tuple(map(tuple, padding)), relu)


def _kernel_and_bias(module: nn.Module, kernel_shape: tuple[int, ...]):
  """The convolution's ``kernel`` parameter and its ``bias`` ([Cout], None without one)."""
  kernel = module.param("kernel", module.kernel_init, kernel_shape, module.param_dtype)
  if not module.use_bias:
    return kernel, None
  return kernel, module.param("bias", module.bias_init, (module.features,), module.param_dtype)


def _convolve(module, x, kernel, bias, strides, padding, affine_relu):
  """``module``'s convolution in its compute dtype with its kernels; ``affine_relu =
  (multiplier, offset)`` folded into the kernel and bias (``conv(x) * multiplier + offset``
  per output channel), then ReLU."""
  if affine_relu is not None:
    multiplier, offset = affine_relu
    bias = offset if bias is None else bias * multiplier + offset
    kernel = kernel * multiplier
  x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)
  relu = affine_relu is not None
  return kernels(module.kernels).convolution(x, kernel, bias, strides, padding, relu)


class Conv(nn.Module):
  """``nn.Conv(features, kernel_size, strides, padding=int)`` on ``[B, H, W, Cin]``: same
  parameters (``kernel [kh, kw, Cin, Cout]``, ``bias``) and outputs, run by the named
  ``KERNELS`` entry (oneDNN adds the bias inside its convolution).

  Attributes:
    features: output channels Cout.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    padding: zero rows / columns on each side.
    use_bias: add a learned bias per output channel.
    dtype: compute dtype (None: promote input and parameters).
    param_dtype: parameter dtype.
    kernels: a ``KERNELS`` name.
  """

  features: int
  kernel_size: tuple[int, int] = (3, 3)
  strides: tuple[int, int] = (1, 1)
  padding: int = 1
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, affine_relu=None) -> jax.Array:
    """``affine_relu=(multiplier, offset)`` ([Cout] each): ``relu(conv(x) * multiplier +
    offset)``, folded into the kernel and bias (``conv_batch_norm_relu``)."""
    if x.ndim != 4:
      raise ValueError(f"Conv expects [B, H, W, C] inputs, got shape {x.shape}")
    kernel, bias = _kernel_and_bias(self, (*self.kernel_size, x.shape[-1], self.features))
    padding = ((self.padding, self.padding),) * 2
    return _convolve(self, x, kernel, bias, self.strides, padding, affine_relu)


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
    kernels: a ``KERNELS`` name.
  """

  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"Deconv2x2 expects [B, H, W, C] inputs, got shape {x.shape}")
    kernel, bias = _kernel_and_bias(self, (2, 2, x.shape[-1], self.features))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    batch, height, width, channels = x.shape
    # One product over channels gives all four taps per pixel: [B, H, W, (i, j, Cout)].
    taps = jnp.transpose(kernel[::-1, ::-1], (2, 0, 1, 3)).reshape(channels, 4 * self.features)
    taps_bias = None if bias is None else jnp.tile(bias, 4)
    no_padding = ((0, 0), (0, 0))
    blocks = kernels(self.kernels).convolution(x, taps[None, None], taps_bias, (1, 1), no_padding)
    blocks = blocks.reshape(batch, height, width, 2, 2, self.features)
    return blocks.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, self.features)


class Conv1x1(nn.Module):
  """1x1 convolution as a matrix product over channels: ``[..., Cin] -> [..., Cout]``.

  Attributes:
    features: output channels Cout.
    use_bias: add a learned bias per output channel.
    dtype: compute dtype (None: promote input and parameters).
    param_dtype: parameter dtype.
    kernel_init: initialiser of the ``[1, 1, Cin, Cout]`` kernel (``nn.Conv``'s layout).
    kernels: a ``KERNELS`` name.
  """

  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, affine_relu=None) -> jax.Array:
    """``affine_relu``: as ``Conv``'s."""
    kernel, bias = _kernel_and_bias(self, (1, 1, x.shape[-1], self.features))
    return _convolve(self, x, kernel, bias, (1, 1), ((0, 0), (0, 0)), affine_relu)


def _window_corners(x: jax.Array) -> tuple[jax.Array, ...]:
  """The four pixels of every 2x2 window: top-left, top-right, bottom-left, bottom-right."""
  return x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]


@jax.custom_vjp
def _max_pool(x: jax.Array) -> jax.Array:
  top_left, top_right, bottom_left, bottom_right = _window_corners(x)
  return jnp.maximum(jnp.maximum(top_left, top_right), jnp.maximum(bottom_left, bottom_right))


def _max_pool_forward(x):
  y = _max_pool(x)
  return y, (x, y)


def _max_pool_backward(residuals, grad_y):
  x, y = residuals
  hits = [corner == y for corner in _window_corners(x)]
  count = sum(hit.astype(jnp.float32) for hit in hits)
  share = grad_y.astype(jnp.float32) / count
  top_left, top_right, bottom_left, bottom_right = [
    jnp.where(hit, share, 0.0).astype(x.dtype) for hit in hits
  ]
  batch, height, width, channels = y.shape
  rows = [jnp.stack(pair, axis=3) for pair in ((top_left, top_right), (bottom_left, bottom_right))]
  return (jnp.stack(rows, axis=2).reshape(batch, 2 * height, 2 * width, channels),)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def _check_pool_input(x: jax.Array) -> None:
  if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"max_pool_2x2 expects [B, H, W, C] with even H and W, got {x.shape}")


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pooling with stride 2: ``[B, H, W, C] -> [B, H/2, W/2, C]`` (H, W even).

  Where a window holds several equal maxima the gradient is shared among them
  (``jnp.max``'s rule) rather than given to the first one (``nn.max_pool``'s
  select-and-scatter); the two agree wherever the window maximum is unique. Differentiable
  in both modes.
  """
  _check_pool_input(x)
  batch, height, width, channels = x.shape
  windows = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
  return jnp.max(windows, axis=(2, 4))


def max_pool_2x2_corners(x: jax.Array) -> jax.Array:
  """``max_pool_2x2`` (same values, same gradient) from the windows' four strided corners,
  with a hand-written gradient of elementwise ops: reverse mode only. XLA:CPU runs
  ``max_pool_2x2``'s gradient (a reduction over two strided axes) 4-6x slower."""
  _check_pool_input(x)
  return _max_pool(x)


def _normalize_relu(x, mean, var, scale, bias, epsilon, dtype):
  # Same operation order as flax.linen.normalization._normalize, so outputs match bit for bit.
  multiplier = lax.rsqrt(var + epsilon) * scale
  return jnp.maximum((x - mean) * multiplier + bias, 0.0).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_relu_train(x, scale, bias, epsilon, dtype):
  """Training-mode BN + ReLU: ``x [..., C] -> (y [..., C] dtype, mean [C], var [C])``.

  Normalises with the batch statistics (which are also returned, for the running
  averages). The gradient takes two passes over ``x`` and the output gradient.
  """
  return _batch_norm_relu_forward(x, scale, bias, epsilon, dtype)[0]


def _batch_norm_relu_forward(x, scale, bias, epsilon, dtype):
  mean, var = xla_kernels.batch_statistics(x)
  y = _normalize_relu(x, mean, var, scale, bias, epsilon, dtype)
  return (y, mean, var), (x, mean, var, scale, bias)


def _batch_norm_relu_backward(epsilon, dtype, residuals, cotangents):
  x, mean, var, scale, bias = residuals
  grad_y, grad_mean, grad_var = cotangents
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  inv_std = lax.rsqrt(var + epsilon)
  centred = x.astype(jnp.float32) - mean
  normalized = centred * inv_std
  # ReLU passes the gradient where its input was positive (jax.nn.relu's convention at 0).
  grad_z = jnp.where(centred * (inv_std * scale) + bias > 0, grad_y.astype(jnp.float32), 0.0)
  grad_bias = jnp.sum(grad_z, axes)
  grad_scale = jnp.sum(grad_z * normalized, axes)
  # d/dx of the normalisation through the batch mean and variance, plus the direct
  # gradients of the returned statistics (zero when they only feed running averages).
  grad_x = (inv_std * scale) * (grad_z - grad_bias / count - normalized * (grad_scale / count))
  grad_x = grad_x + grad_mean / count + centred * (2.0 * grad_var / count)
  return grad_x.astype(x.dtype), grad_scale.astype(scale.dtype), grad_bias.astype(bias.dtype)


batch_norm_relu_train.defvjp(_batch_norm_relu_forward, _batch_norm_relu_backward)


def onednn_batch_norm_relu_train(x, scale, bias, epsilon, dtype):
  """``batch_norm_relu_train`` through oneDNN where it can run (x already in ``dtype``)."""
  if (
    x.dtype != jnp.dtype(dtype)
    or x.size < ONEDNN_MIN_BATCH_NORM_ELEMENTS
    or not onednn.supports_batch_norm(x, scale, bias)
  ):
    return batch_norm_relu_train(x, scale, bias, epsilon, dtype)
  return onednn.batch_norm_relu(x, scale, bias, epsilon)


def onednn_max_pool(x: jax.Array) -> jax.Array:
  """``max_pool_2x2_corners`` where the "onednn" kernels take the layers over (float32 or
  bfloat16, large enough: differentiable in reverse mode only, as they are), else
  ``max_pool_2x2`` (tiny and float64 networks keep forward-mode derivatives)."""
  if x.dtype not in (jnp.float32, jnp.bfloat16) or x.size < ONEDNN_MIN_BATCH_NORM_ELEMENTS:
    return max_pool_2x2(x)
  return max_pool_2x2_corners(x)


@dataclasses.dataclass(frozen=True)
class Kernels:
  """convolution(x [B, H, W, Cin], kernel [kh, kw, Cin, Cout], bias [Cout] | None, strides,
  padding pairs, relu) (``xla_convolution``'s contract) and batch_norm_relu(x [..., C],
  scale, bias, epsilon, dtype) -> (y, mean, var), the training-mode BN + ReLU
  (``batch_norm_relu_train``'s contract). fold_batch_norm: ``conv_batch_norm_relu`` folds an
  inference-mode BN + ReLU into the convolution before it. max_pool: ``max_pool_2x2``'s
  contract."""

  convolution: Callable
  batch_norm_relu: Callable
  fold_batch_norm: bool = False
  max_pool: Callable = max_pool_2x2


KERNELS = {
  # Unfolded: the exported pipeline (kernels "xla") computes exactly nn.BatchNorm's inference.
  "xla": Kernels(xla_convolution, batch_norm_relu_train),
  # Folded: one oneDNN pass per convolution instead of a convolution and an XLA BN + ReLU
  # pass (width-128 forward, bfloat16, AMD EPYC: the BN + ReLU passes were 17 % of op time).
  "onednn": Kernels(
    onednn_convolution, onednn_batch_norm_relu_train, fold_batch_norm=True, max_pool=onednn_max_pool
  ),
}


AUTO_KERNELS = "auto"


def resolve_kernels(name: str) -> str:
  """A config's kernels name as the layers run it: "auto" is "onednn" where JAX computes on
  the CPU and the oneDNN extension loaded, "xla" otherwise (GPUs, TPUs, no extension)."""
  if name != AUTO_KERNELS:
    return name
  return "onednn" if jax.default_backend() == "cpu" and onednn.available() else "xla"


def kernels(name: str) -> Kernels:
  """The kernels registered as ``name``."""
  if name not in KERNELS:
    raise ValueError(f"kernels {name!r}: expected one of {', '.join(sorted(KERNELS))}")
  return KERNELS[name]


class BatchNormReLU(nn.Module):
  """Batch normalisation over all but the last axis, then ReLU: ``[..., C] -> [..., C]``.

  Drop-in for ``nn.relu(nn.BatchNorm(momentum, epsilon)(x, use_running_average))``:
  same ``params`` (``scale``, ``bias``) and ``batch_stats`` (``mean``, ``var``, biased
  variance), same running-average update. Statistics are float32 whatever ``dtype``.

  Attributes:
    momentum: running-average decay (0.9 = PyTorch's momentum 0.1).
    epsilon: added to the variance.
    dtype: output (compute) dtype; None keeps the input's.
    param_dtype: dtype of scale and bias.
    kernels: a ``KERNELS`` name (the training-mode normalisation).
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    channels = x.shape[-1]
    dtype = self.dtype or x.dtype
    scale = self.param("scale", nn.initializers.ones_init(), (channels,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros_init(), (channels,), self.param_dtype)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
    if use_running_average:
      return _normalize_relu(
        x, running_mean.value, running_var.value, scale, bias, self.epsilon, dtype
      )
    y, mean, var = kernels(self.kernels).batch_norm_relu(x, scale, bias, self.epsilon, dtype)
    if not self.is_initializing():
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    return y


def conv_batch_norm_relu(conv: nn.Module, norm: BatchNormReLU, x: jax.Array, train: bool):
  """``relu(norm(conv(x)))`` for a ``Conv`` or ``Conv1x1`` then a ``BatchNormReLU``.

  In inference mode the normalisation is an affine map per channel, ``z * multiplier +
  offset`` with ``multiplier = scale / sqrt(var + epsilon)`` and ``offset = bias - mean *
  multiplier``; where the norm's kernels fold (``Kernels.fold_batch_norm``) and its variables
  exist (not while initialising), it is folded into the convolution's kernel and bias and the
  ReLU is fused: one pass over the output instead of two. Same function, rounded once less.
  """
  folds = kernels(norm.kernels).fold_batch_norm and norm.has_variable("batch_stats", "mean")
  if train or not folds:
    return norm(conv(x), use_running_average=not train)
  mean = norm.get_variable("batch_stats", "mean")
  var = norm.get_variable("batch_stats", "var")
  multiplier = lax.rsqrt(var + norm.epsilon) * norm.get_variable("params", "scale")
  offset = norm.get_variable("params", "bias") - mean * multiplier
  return conv(x, affine_relu=(multiplier, offset))

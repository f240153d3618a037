"""Stacked hourglass network for landmark heatmaps (Sec. III-B, Fig. 3-4, Eq. 7).

The MSM's second stage: a canonical 128x128 face (from ST-GAN) goes in, one heatmap per
landmark comes out at 64x64 after each of the stacked hourglass modules (Newell et al.
[6]; the paper uses two). Architecture as read from the paper, with the choices it
leaves open marked "(choice)":

* Input (choice, ``space_to_depth``): a crop of b x 128 pixels is cut into b x b blocks
  stacked on the channels (``space_to_depth``) before the stem, so the maps stay 64x64
  and the hourglasses cost the same while the first conv sees b x b times the pixels.
  ``widen_stem`` turns a b = 1 network into a b > 1 one that computes the same maps on
  the block-averaged crop: the start of a fine-tune at the higher resolution;
  ``widen_channels`` does the same for a wider network (e.g. ``width`` 192 -> 256).
* Stem (Sec. III-B): two 3x3 convs "to increase the number of feature channels", a 2x2
  max-pool 128 -> 64, a 3x3 conv and a residual unit to ``width`` (256) channels. Stem
  widths (64, 64, 128) (choice: Newell's 64 -> 128 -> 256 progression).
* Residual unit (Fig. 4, Eq. 7): ``x + F(x)`` with F = BN-ReLU-conv1x1 (width/2),
  BN-ReLU-conv3x3 (width/2), BN-ReLU-conv1x1 (width); a 1x1 conv on the skip when the
  channel count changes (applied to the raw input, as Newell). "Batch normalization is
  performed before all convolutional layers ... except for the first convolutional
  layer": every conv here is pre-activated except the first stem conv, the
  deconvolutions and the 1x1 conv that maps heatmaps back to features (choice: those
  read predictions or replace the linear nearest-neighbour upsampling).
* Hourglass module: ``depth`` (4) recursive levels; each level keeps a skip branch
  (one residual unit) at its resolution, max-pools, runs a residual unit, recurses (a
  residual unit at the bottom), runs another residual unit and upsamples with a 2x2
  stride-2 deconvolution (Sec. III-B: "deconvolution ... replace[s] upsampling") that
  is added to the skip branch. The deconvolutions start as nearest-neighbour upsampling
  (every kernel tap the identity; choice) so the untrained network is Newell's.
* Head per stack (Newell's intermediate supervision, the paper's "loss function for
  intermediate supervision at the end of each hourglass module"): a residual unit,
  BN-ReLU-conv1x1 (width), BN-ReLU, conv1x1 to L heatmaps; before the next stack the
  activated features and the heatmaps are each mapped back by a 1x1 conv and added to
  the stack's input.

BatchNorm uses PyTorch's defaults (momentum 0.1 i.e. Flax ``momentum=0.9``, eps 1e-5)
since the paper trained in PyTorch; every conv has a bias. Parameter count at the
defaults (68 landmarks): 8,701,768 (``tests/test_hourglass.py`` derives it layer by
layer); the head's BatchNorm placement is the only part of the count the paper does not
pin down.

The BN-ReLU pairs, 2x2 deconvolutions, max-pools and 1x1 convs are the CPU-fast forms of
``layers.py`` (same functions as the plain Flax layers, proven in
``tests/test_layers.py``). In inference mode with the "onednn" kernels, each BN + ReLU that
directly follows a convolution (two per residual unit, the stem's first, the head's) is
folded into that convolution (``layers.conv_batch_norm_relu``); parameters and names are
those of the unfolded network. Training on CPU is fastest with the process-level settings
measured in ``layers.py``'s docstring.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from msm_jax.models.layers import (
  BatchNormReLU,
  Conv,
  Conv1x1,
  Deconv2x2,
  Dtype,
  conv_batch_norm_relu,
  kernels,
)


def space_to_depth(images: jax.Array, block: int) -> jax.Array:
  """``[B, H, W, C] -> [B, H / b, W / b, b * b * C]``: channel ``(dy * b + dx) * C + c`` of
  output pixel ``(y, x)`` is channel ``c`` of input pixel ``(b * y + dy, b * x + dx)``."""
  batch, height, width, channels = images.shape
  blocks = images.reshape(batch, height // block, block, width // block, block, channels)
  return blocks.transpose(0, 1, 3, 2, 4, 5).reshape(
    batch, height // block, width // block, block * block * channels
  )


def widen_stem(variables: dict, block: int) -> dict:
  """The variables of a ``space_to_depth = 1`` network for the same network with
  ``space_to_depth = block``: the first conv's kernel ``[3, 3, C, F]`` is repeated for each
  of the block's ``block * block`` pixels and divided by their number, so the new network
  computes the old one on the crop averaged over each block (a 2x2 mean of a 256 crop is a
  128 crop). Every other array is shared as it is."""
  params = dict(variables["params"])
  stem = dict(params["stem_conv1"])
  stem["kernel"] = jnp.tile(stem["kernel"], (1, 1, block * block, 1)) / (block * block)
  params["stem_conv1"] = stem
  return {**variables, "params": params}


def widen_channels(variables: dict, wider: dict) -> dict:
  """The variables of a narrow network embedded in those of a wider one of the same layout
  (``wider``: e.g. a fresh init at ``width = 256`` for a network trained at 192), so that the
  wider network computes the narrow one's maps exactly. Each array keeps the narrow values in
  its leading slice; the extra entries take ``wider``'s values, except the kernels' rows that
  read an extra input channel (axis -2), which are zero: the old channels then never see the
  new ones, while the new ones are computed from the old (``wider``'s random columns), so
  their outgoing weights get gradients from the first step. BatchNorm statistics of the new
  channels are ``wider``'s (mean 0, variance 1)."""

  def embed(path, narrow, wide):
    name = jax.tree_util.keystr(path)
    if narrow.ndim != wide.ndim or any(n > w for n, w in zip(narrow.shape, wide.shape)):
      raise ValueError(f"{name}: cannot embed shape {narrow.shape} in {wide.shape}")
    out = jnp.asarray(wide, narrow.dtype)
    if narrow.ndim >= 2 and wide.shape[-2] > narrow.shape[-2]:
      out = out.at[..., narrow.shape[-2] :, :].set(0)
    return out.at[tuple(slice(0, n) for n in narrow.shape)].set(narrow)

  names = lambda tree: {jax.tree_util.keystr(path) for path, _ in jax.tree.leaves_with_path(tree)}
  unmatched = sorted(names(variables) ^ names(wider))
  if unmatched:
    raise ValueError(f"the two networks' layouts differ: {', '.join(unmatched[:4])} in one only")
  return jax.tree_util.tree_map_with_path(embed, variables, wider)


def _nearest_upsampling_init(key, shape, dtype=jnp.float32):
  """Deconv kernel ``[2, 2, C, C]`` whose every tap is the identity: nearest upsampling."""
  del key
  _, _, in_features, out_features = shape
  if in_features != out_features:
    raise ValueError(f"nearest-upsampling init needs Cin == Cout, got kernel shape {shape}")
  return jnp.broadcast_to(jnp.eye(in_features, dtype=dtype), shape)


def _conv3x3(features: int, dtype: Dtype, kernels: str, name=None) -> Conv:
  return Conv(features, (3, 3), padding=1, dtype=dtype, kernels=kernels, name=name)


def _pre_activation(x: jax.Array, train: bool, dtype: Dtype, kernels: str) -> jax.Array:
  """BN then ReLU: the "batch normalization before the convolution" of Sec. III-B."""
  return BatchNormReLU(dtype=dtype, kernels=kernels)(x, use_running_average=not train)


def _activated(conv: nn.Module, x: jax.Array, train: bool, dtype: Dtype, kernels: str):
  """BN + ReLU of ``conv(x)``: the pre-activation of the next convolution, folded into this
  one at inference where the kernels do (``layers.conv_batch_norm_relu``)."""
  return conv_batch_norm_relu(conv, BatchNormReLU(dtype=dtype, kernels=kernels), x, train)


class ResidualUnit(nn.Module):
  """Bottleneck residual unit of Fig. 4: ``[B, H, W, Cin] -> [B, H, W, features]``."""

  features: int
  dtype: Dtype = jnp.float32
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bottleneck = self.features // 2
    conv1x1 = lambda features, **kw: Conv1x1(features, dtype=self.dtype, kernels=self.kernels, **kw)
    y = _pre_activation(x, train, self.dtype, self.kernels)
    y = _activated(conv1x1(bottleneck), y, train, self.dtype, self.kernels)
    y = _activated(
      _conv3x3(bottleneck, self.dtype, self.kernels), y, train, self.dtype, self.kernels
    )
    y = conv1x1(self.features)(y)
    skip = x if x.shape[-1] == self.features else conv1x1(self.features, name="skip")(x)
    return skip + y


class HourglassModule(nn.Module):
  """One hourglass of ``depth`` levels: ``[B, H, W, C] -> [B, H, W, C]``, H % 2**depth == 0."""

  features: int
  depth: int
  dtype: Dtype = jnp.float32
  kernels: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    unit = lambda name: ResidualUnit(self.features, self.dtype, kernels=self.kernels, name=name)
    skip = unit("skip")(x, train)
    low = unit("down")(kernels(self.kernels).max_pool(x), train)
    if self.depth > 1:
      low = HourglassModule(
        self.features, self.depth - 1, self.dtype, kernels=self.kernels, name="inner"
      )(low, train)
    else:
      low = unit("bottom")(low, train)
    low = unit("up")(low, train)
    upsampled = Deconv2x2(
      self.features,
      dtype=self.dtype,
      kernel_init=_nearest_upsampling_init,
      kernels=self.kernels,
      name="deconv",
    )(low)
    return skip + upsampled


class StackedHourglass(nn.Module):
  """Stacked hourglass of Sec. III-B.

  ``images [B, H, W, C] float32`` (H, W divisible by ``b * 2 ** (depth + 1)``, b =
  ``space_to_depth``; 128x128x3 in the paper) -> heatmaps
  ``[num_stacks, B, H / 2b, W / 2b, num_landmarks] float32``, one set
  per stack (all are supervised; the last is the prediction). Compute runs in ``dtype``
  (e.g. bfloat16); parameters are float32 and the heatmaps are returned as float32 (float64
  when the compute dtype is float64).

  Attributes:
    num_landmarks: L, heatmaps per stack (68 for 300-W, 98 WFLW, 29 COFW).
    width: channels inside the hourglasses (256, Fig. 3).
    num_stacks: hourglass modules (2, Sec. III-B).
    depth: recursive levels per hourglass (4, Sec. III-B).
    stem_widths: channels of the stem's three 3x3 convs.
    space_to_depth: b, the side of the pixel blocks stacked on the channels before the
      stem (1: none, the paper).
    dtype: compute dtype.
    kernels: ``layers.KERNELS`` name: "xla", or "onednn" (oneDNN's convolutions and
      training-mode BN + ReLU on CPU where they can run, XLA's elsewhere; not exportable with
      ``jax.export``).
  """

  num_landmarks: int = 68
  width: int = 256
  num_stacks: int = 2
  depth: int = 4
  stem_widths: tuple[int, int, int] = (64, 64, 128)
  space_to_depth: int = 1
  dtype: Dtype = jnp.float32
  kernels: str = "xla"

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if not isinstance(self.space_to_depth, int) or self.space_to_depth < 1:
      raise ValueError(f"space_to_depth must be a positive int, got {self.space_to_depth!r}")
    factor = self.space_to_depth * 2 ** (self.depth + 1)
    if images.ndim != 4 or images.shape[1] % factor or images.shape[2] % factor:
      raise ValueError(
        f"StackedHourglass expects images [B, H, W, C] with H and W divisible by "
        f"space_to_depth * 2**(depth+1) = {factor}, got shape {images.shape}"
      )
    if self.space_to_depth > 1:
      images = space_to_depth(images, self.space_to_depth)
    if len(self.stem_widths) != 3:
      raise ValueError(f"stem_widths needs 3 entries, got {self.stem_widths}")
    activate = lambda y: _pre_activation(y, train, self.dtype, self.kernels)
    # Modules are named in construction order (BatchNormReLU_0, _1, ...), so each BN is built
    # where the unfolded network built it.
    activated = lambda conv, y: _activated(conv, y, train, self.dtype, self.kernels)
    conv3x3 = lambda features, name: _conv3x3(features, self.dtype, self.kernels, name)
    conv1x1 = lambda features, name: Conv1x1(
      features, dtype=self.dtype, kernels=self.kernels, name=name
    )
    unit = lambda name: ResidualUnit(self.width, self.dtype, kernels=self.kernels, name=name)
    x = activated(conv3x3(self.stem_widths[0], "stem_conv1"), images)
    x = conv3x3(self.stem_widths[1], "stem_conv2")(x)
    x = kernels(self.kernels).max_pool(x)
    x = conv3x3(self.stem_widths[2], "stem_conv3")(activate(x))
    x = unit("stem_residual")(x, train)

    heatmaps = []
    for stack in range(self.num_stacks):
      y = HourglassModule(
        self.width, self.depth, self.dtype, kernels=self.kernels, name=f"hourglass{stack}"
      )(x, train)
      y = unit(f"head_residual{stack}")(y, train)
      y = activate(y)
      y = activated(conv1x1(self.width, f"head_conv{stack}"), y)
      stack_heatmaps = conv1x1(self.num_landmarks, f"heatmaps{stack}")(y)
      heatmaps.append(stack_heatmaps.astype(jnp.promote_types(self.dtype, jnp.float32)))
      if stack < self.num_stacks - 1:
        x = (
          x
          + conv1x1(self.width, f"features_back{stack}")(y)
          + conv1x1(self.width, f"heatmaps_back{stack}")(stack_heatmaps)
        )
    return jnp.stack(heatmaps)

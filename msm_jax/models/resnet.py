"""Res-50 coordinate-regression baseline of the ablation study (Sec. IV-G, Tables VII-VIII).

The paper checks that ST-GAN also helps a coordinate-regression network: a 50-layer
residual network (He et al. [26]) on 128x128 crops whose final average pooling is
shrunk from 7x7 to 4x4 to fit the smaller input, followed by a dense layer to the 2L
landmark coordinates.

Standard bottleneck ResNet-50: a 7x7 stride-2 conv (64), 3x3 stride-2 max-pool, four
stages of (3, 4, 6, 3) bottleneck blocks (1x1, 3x3, 1x1 with 4x expansion; stride on
the 3x3 conv as in torchvision's "v1.5"; a 1x1 projection on the skip when the shape
changes), post-activation BN-ReLU. At 128x128 the last stage is 4x4x2048, so the 4x4
average pool leaves one 2048-vector per face. Convolutions before BN carry no bias, and
each block's last BN scale starts at zero (the block starts as the identity; Goyal et
al., also Flax's ImageNet example). BatchNorm uses PyTorch's defaults.

Output units are whatever the regression targets are (the trainer chooses, e.g. the
normalised coordinates of ``msm_jax/__init__.py``); the dense layer is linear.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from msm_jax.models.layers import BatchNormReLU, Conv1x1, Dtype

RESNET50_STAGE_SIZES = (3, 4, 6, 3)
RESNET50_STEM_FEATURES = 64
BOTTLENECK_EXPANSION = 4
FINAL_POOL = 4  # Sec. IV-G: "resized from 7 to 4"


def _batch_norm(dtype, name=None, zero_scale=False):
  return nn.BatchNorm(
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_init=nn.initializers.zeros_init() if zero_scale else nn.initializers.ones_init(),
    name=name,
  )


class BottleneckBlock(nn.Module):
  """``[B, H, W, Cin] -> [B, H/stride, W/stride, 4 * features]``."""

  features: int
  stride: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out_features = BOTTLENECK_EXPANSION * self.features
    y = Conv1x1(self.features, use_bias=False, dtype=self.dtype)(x)
    y = BatchNormReLU(dtype=self.dtype)(y, use_running_average=not train)
    y = nn.Conv(
      self.features, (3, 3), strides=self.stride, padding=1, use_bias=False, dtype=self.dtype
    )(y)
    y = BatchNormReLU(dtype=self.dtype)(y, use_running_average=not train)
    y = Conv1x1(out_features, use_bias=False, dtype=self.dtype)(y)
    y = _batch_norm(self.dtype, zero_scale=True)(y, use_running_average=not train)
    if x.shape[-1] != out_features or self.stride != 1:
      # A strided 1x1 convolution reads every stride-th pixel: subsample, then project.
      x = x[:, :: self.stride, :: self.stride]
      x = Conv1x1(out_features, use_bias=False, dtype=self.dtype, name="projection")(x)
      x = _batch_norm(self.dtype, name="projection_bn")(x, use_running_average=not train)
    return nn.relu(x + y)


class ResNet50(nn.Module):
  """``images [B, H, W, C] float32`` (128x128 in the paper; H, W divisible by 128) ->
  coordinates ``[B, num_landmarks, 2] float32``.

  Attributes:
    num_landmarks: L.
    width_multiplier: multiplies every layer's number of channels (1.0 = ResNet-50; tests use less).
    dtype: compute dtype (parameters stay float32).
  """

  num_landmarks: int = 68
  width_multiplier: float = 1.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if images.ndim != 4 or images.shape[1] % 128 or images.shape[2] % 128:
      raise ValueError(
        f"ResNet50 expects images [B, H, W, C] with H and W divisible by 128 "
        f"(Sec. IV-G: 128x128 input, 4x4 final pooling), got {images.shape}"
      )
    channels = lambda base: max(1, round(base * self.width_multiplier))
    x = nn.Conv(
      channels(RESNET50_STEM_FEATURES),
      (7, 7),
      strides=2,
      padding=3,
      use_bias=False,
      dtype=self.dtype,
      name="stem_conv",
    )(images)
    x = BatchNormReLU(dtype=self.dtype, name="stem_bn")(x, use_running_average=not train)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(RESNET50_STAGE_SIZES):
      for block in range(num_blocks):
        x = BottleneckBlock(
          channels(RESNET50_STEM_FEATURES * 2**stage),
          stride=2 if stage > 0 and block == 0 else 1,
          dtype=self.dtype,
          name=f"stage{stage + 1}_block{block + 1}",
        )(x, train)
    x = nn.avg_pool(x, (FINAL_POOL, FINAL_POOL), strides=(FINAL_POOL, FINAL_POOL))
    x = x.reshape(images.shape[0], -1)
    coordinates = nn.Dense(2 * self.num_landmarks, dtype=self.dtype, name="regressor")(x)
    return coordinates.reshape(images.shape[0], self.num_landmarks, 2).astype(jnp.float32)

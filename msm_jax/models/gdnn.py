"""GDNN: the ST-GAN generator's localisation network (Sec. III-A, Table I).

11 convolutions on a 128x128x3 face crop regress the affine theta [2, 3] of Eq. 1-2; the
grid generator and sampler are `msm_jax.core.sampler.warp`.

Reading of Table I (it has typos):
* Conv6 and Conv8 list "16" kernels but output 8x8x64 and 4x4x128: the output-size column
  is followed (64 and 128 kernels), as the next layers' input sizes confirm.
* The text speaks of "a 4x4 global average pooling layer and a 1x1 convolutional layer",
  the table of a 4x4 convolution to 1x1x32 (Conv10) then a 1x1 convolution to 6 (Conv11).
  The table is followed: Conv10 is a 4x4 VALID convolution over the whole 4x4 map (a learned
  pooling; an average pool is the special case of equal weights), Conv11 a 1x1 convolution.
* Normalisation and activations are not given: BatchNorm + ReLU after Conv1-Conv10 (the
  convention of the paper's hourglass), none after Conv11, which outputs theta.
* Conv11 starts at zero weights and the identity bias [1, 0, 0, 0, 1, 0], so the untrained
  network outputs the identity transform ("no warp") for every face: training starts from
  the detector's crop rather than from a random warp.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

# (kernel, features, stride) of Conv1-Conv10, Table I with the output-size reading above.
TABLE_I = (
  (3, 8, 2),
  (3, 16, 2),
  (3, 16, 1),
  (3, 32, 2),
  (3, 32, 1),
  (3, 64, 2),
  (3, 64, 1),
  (3, 128, 2),
  (3, 128, 1),
  (4, 32, 1),
)
IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _identity_bias(key, shape, dtype=jnp.float32):
  del key
  return jnp.asarray(IDENTITY_THETA, dtype).reshape(shape)


class GDNN(nn.Module):
  """images [B, 128, 128, 3] float32 in [0, 1] -> theta [B, 2, 3] (Eq. 1).

  Attributes:
    width_multiplier: multiplies every layer's number of kernels (1.0 = Table I; tests use less).
    dtype: compute dtype (parameters stay float32).
  """

  width_multiplier: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if images.ndim != 4 or images.shape[1:3] != (128, 128):
      raise ValueError(f"GDNN expects images [B, 128, 128, C] (Table I), got {images.shape}")
    x = images.astype(self.dtype)
    for index, (kernel, features, stride) in enumerate(TABLE_I, start=1):
      last_spatial = index == len(TABLE_I)
      x = nn.Conv(
        max(1, round(features * self.width_multiplier)),
        (kernel, kernel),
        strides=stride,
        padding="VALID" if last_spatial else ((1, 1), (1, 1)) if kernel == 3 else "SAME",
        use_bias=False,
        dtype=self.dtype,
        name=f"conv{index}",
      )(x)
      x = nn.BatchNorm(
        use_running_average=not train, momentum=0.9, dtype=self.dtype, name=f"bn{index}"
      )(x)
      x = nn.relu(x)
    theta = nn.Conv(
      6,
      (1, 1),
      kernel_init=nn.initializers.zeros,
      bias_init=_identity_bias,
      dtype=self.dtype,
      name="conv11",
    )(x)
    # float32 for a bfloat16 compute, float64 for a float64 one (gradient checks).
    return theta.reshape(images.shape[0], 2, 3).astype(jnp.promote_types(self.dtype, jnp.float32))

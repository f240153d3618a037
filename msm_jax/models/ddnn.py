"""DDNN: the ST-GAN discriminator (Sec. III-A, Table II).

Seven convolutions judge whether a 128x128 face is canonical ("real": pupils and mouth on the
template, no background) or a generator output ("fake"). Conv1-Conv6 are 4x4 stride-2
convolutions (32 ... 1024 kernels, 128 -> 2 pixels), Conv7 a 2x2 convolution to 2 outputs.

Choices the paper leaves open:
* Activations / normalisation: LeakyReLU(0.2) after Conv1-Conv6, BatchNorm from Conv2 on
  (the DCGAN discriminator convention).
* Output: Table II ends with 2 channels, the text with "a scalar representing the
  possibilities". A softmax over two classes equals a sigmoid of their difference, so the
  module returns one logit, channel "real" minus channel "fake": D(x) = sigmoid(logit), which
  the losses of Eq. 3-4 take.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

TABLE_II_FEATURES = (32, 64, 128, 256, 512, 1024)  # Conv1-Conv6, 4x4, stride 2


class DDNN(nn.Module):
  """images [B, 128, 128, 3] float32 in [0, 1] -> real/fake logits [B].

  Attributes:
    width_multiplier: multiplies every layer's number of kernels (1.0 = Table II; tests use less).
    dtype: compute dtype (parameters stay float32).
  """

  width_multiplier: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    if images.ndim != 4 or images.shape[1:3] != (128, 128):
      raise ValueError(f"DDNN expects images [B, 128, 128, C] (Table II), got {images.shape}")
    x = images.astype(self.dtype)
    for index, features in enumerate(TABLE_II_FEATURES, start=1):
      x = nn.Conv(
        max(1, round(features * self.width_multiplier)),
        (4, 4),
        strides=2,
        padding=((1, 1), (1, 1)),
        use_bias=index == 1,
        dtype=self.dtype,
        name=f"conv{index}",
      )(x)
      if index > 1:
        x = nn.BatchNorm(
          use_running_average=not train, momentum=0.9, dtype=self.dtype, name=f"bn{index}"
        )(x)
      x = nn.leaky_relu(x, 0.2)
    two = nn.Conv(2, (2, 2), padding="VALID", dtype=self.dtype, name="conv7")(x)  # [B,1,1,2]
    two = two.reshape(images.shape[0], 2).astype(jnp.float32)
    return two[:, 1] - two[:, 0]

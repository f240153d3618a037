"""msm-jax: the Multistage Model (MSM) for robust face alignment, in JAX/Flax.

Wang, Cheng, Zhou, Tao, Kwan, "Multistage Model for Robust Face Alignment Using
Deep Neural Networks". Three stages, one module each:

  ST-GAN       models/gdnn.py, models/ddnn.py, sampler.py      (Sec. III-A, Eq. 1-6)
  hourglass    models/hourglass.py, heatmaps.py                (Sec. III-B, Eq. 7-9)
  shape repair shape_dictionary.py                             (Sec. III-C, Eq. 10-11)

Conventions used everywhere in the library (state them once, rely on them always):

* Images are ``[B, H, W, C]`` float32 in ``[0, 1]`` (channels last, as Flax convs).
* Landmarks are ``[..., L, 2]`` float32 ``(x, y)`` in 0-based pixel coordinates
  where integer values are pixel *centres*: pixel (row i, column j) covers
  ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]`` and an image of width W spans
  ``[-0.5, W - 0.5]``. Readers convert dataset conventions (e.g. 300-W's 1-based
  ``.pts``) to this once, on read.
* Normalised coordinates (the STN convention of Eq. 2, ``align_corners=False``):
  ``u = (2 x + 1) / W - 1`` so that the image's outer edges sit at -1 and +1.
* ``theta`` is ``[..., 2, 3]`` and maps normalised *output* coordinates
  ``(u, v, 1)`` to normalised *input* coordinates, exactly as PyTorch's
  ``affine_grid``. Pixel-space affine matrices are ``[..., 3, 3]``.
* Heatmaps are ``[B, h, w, L]`` (channels last). A point at crop pixel x maps to
  heatmap pixel ``(x + 0.5) * h / H - 0.5`` (pixel areas, not centres, scale).
"""

__version__ = "0.1.0"

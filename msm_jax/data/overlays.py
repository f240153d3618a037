"""Landmarks drawn on images: the one drawer behind `predict.py`'s overlays, the evaluation's
overlay grids and the synthetic sample grid (PIL only, no JAX).

Colours: green for kept (reliable or visible) landmarks, red for flagged ones (repaired by the
shape dictionary, or occluded), blue for face boxes.
"""

import numpy as np
from PIL import Image, ImageDraw

from msm_jax import files

KEPT_COLOUR, FLAGGED_COLOUR, BOX_COLOUR = (40, 220, 40), (240, 40, 40), (60, 140, 255)


def draw_landmarks(image: np.ndarray, faces, zoom: int = 1, radius: float | None = None):
  """The image (uint8 [H, W, 3]) enlarged ``zoom`` x by pixel copies, with each face drawn.

  faces: (landmarks [L, 2] pixel-centre coordinates, flagged [L] bool, box [4] or None)
    per face; a box is drawn as a rectangle and sets the dot size (its side / 90).
  radius: dot radius in output pixels; default from the box, else 0.6 + 0.35 x zoom.
  Returns a PIL image.
  """
  canvas = Image.fromarray(np.asarray(image, np.uint8))
  if zoom != 1:
    canvas = canvas.resize((canvas.width * zoom, canvas.height * zoom), Image.NEAREST)
  draw = ImageDraw.Draw(canvas)
  # A pixel centre x covers output pixels [x * zoom, x * zoom + zoom - 1]: their middle.
  to_canvas = lambda points: np.asarray(points, np.float64) * zoom + (zoom - 1) / 2
  for landmarks, flagged, box in faces:
    dot = radius if radius is not None else 0.6 + 0.35 * zoom
    if box is not None:
      (x0, y0), (x1, y1) = to_canvas(np.reshape(box, (2, 2)))
      side = max(x1 - x0, y1 - y0)
      dot = radius if radius is not None else max(1.0, side / 90)
      draw.rectangle([x0, y0, x1, y1], outline=BOX_COLOUR, width=max(1, round(side / 150)))
    for (x, y), is_flagged in zip(to_canvas(landmarks), flagged):
      colour = FLAGGED_COLOUR if is_flagged else KEPT_COLOUR
      draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=colour)
  return canvas


def save_png(canvas: Image.Image, path: str) -> None:
  """``canvas`` as a PNG at ``path``, written whole or not at all (`files.atomic_write`): a
  full disk or Ctrl-C while encoding leaves the older file, or none, never a truncated one."""
  with files.atomic_write(path, "wb") as file:
    canvas.save(file, format="PNG")

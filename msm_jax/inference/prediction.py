"""Landmarks for photos: the Python API behind `predict.py` (Algorithm 2 on face boxes).

Each face box (given, or a detector's box through `detection.calibrated_face_box`: dlib's HOG
first, OpenCV's Haar cascade where it finds none) is treated like
a training box: grown by `config.data.box_margin` and squared (`data/augment.face_crop_matrix`),
and that square is what the one-jit pipeline crops to 128x128.

Faces, not images, are batched. Every face travels as its own *window*: an integer-aligned
square of the image around its crop square (CONTEXT times its side, so the ST stage can zoom
out or rotate without leaving it), zero where it leaves the image. Copying pixels at integer
offsets changes no bilinear sample, and zeros are what the pipeline samples outside an image,
so a window gives the same landmarks as the whole image would (a re-crop pass,
`config.inference.recrop_passes`, stays inside the window unless the face box was off by more
than half its size). All windows are zero-padded to
one size, so the pipeline compiles once per model, whatever the photos' sizes, and a batch
holds no whole photos. Faces whose crop would be downscaled more than MAX_CROP_DOWNSCALE
times (a 1000-pixel face to 128) first have their window resized with PIL's antialiasing
filter: bilinear sampling alone would alias, and the model was trained on crops close to
their native resolution (300-W faces of ~130 px).

Compute (`COMPUTE_POLICIES`): "full" runs the package's pipeline as configured (the shipped
one: two passes, each with the flip: four landmark-network calls per face); "adaptive" runs
one pass without the flip and the flip and re-crop pass only for faces whose first pass is
unsure (`pipeline.make_adaptive_inference_fn`), below a confidence fitted on validation data
(the package's `tracking_thresholds.refine_below_detected`, `msm_jax.eval.tracking_fit`).

Coordinates: 0-based pixel coordinates of the image *as displayed* (EXIF orientation applied
to files), integers at pixel centres (msm_jax/__init__.py).
"""

import dataclasses
import functools
import math
import os
import weakref

import numpy as np
from PIL import Image

from msm_jax.core import geometry
from msm_jax.data import images as image_io
from msm_jax.data import overlays
from msm_jax.inference import detection, pipeline

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CONTEXT = 2.0  # window side / crop-square side
MAX_CROP_DOWNSCALE = 1.5  # larger faces are resized (antialiased) to this x crop size first
RELIABLE_COLOUR, REPAIRED_COLOUR = overlays.KEPT_COLOUR, overlays.FLAGGED_COLOUR
BOX_COLOUR = overlays.BOX_COLOUR


class NoFaceFoundError(ValueError):
  """The detector found no face in an image."""


@dataclasses.dataclass(frozen=True)
class FacePrediction:
  """One face. box: [4] the landmark-like face box used (x0, y0, x1, y1); detector_box: [4]
  the raw detector box, or None for given boxes; landmarks: [L, 2] float32 (x, y); scores: [L]
  float32 (Eq. 9, normalised); reliable: [L] bool (False: replaced by the shape repair);
  hourglass_landmarks: [L, 2] the hourglass's landmarks before the shape repair; theta:
  [2, 3] the ST-GAN's warp of the (last) crop (the identity when the ST stage is off)."""

  box: np.ndarray
  detector_box: np.ndarray | None
  landmarks: np.ndarray
  scores: np.ndarray
  reliable: np.ndarray
  hourglass_landmarks: np.ndarray | None = None
  theta: np.ndarray | None = None
  detector: str | None = None  # the detector that found the face; None for given boxes


@dataclasses.dataclass(frozen=True)
class ImagePrediction:
  """source: the path (or "image <i>" for arrays); image_size: (height, width) upright;
  faces: largest detected face first (given boxes: in their order); error: why it failed."""

  source: str
  image_size: tuple[int, int] | None
  faces: list
  error: str | None = None


def load_upright(path: str) -> np.ndarray:
  """[H, W, 3] uint8 RGB, rotated/flipped upright by the EXIF orientation tag."""
  return image_io.load_image(path, apply_exif=True)


def crop_squares(boxes: np.ndarray, margin: float) -> np.ndarray:
  """[N, 4] face boxes -> [N, 4] crop squares: side margin * max(w, h) about the centre."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  centre = (boxes[:, :2] + boxes[:, 2:]) / 2
  half = margin * np.max(boxes[:, 2:] - boxes[:, :2], axis=1, keepdims=True) / 2
  return np.concatenate([centre - half, centre + half], axis=1)


def padded_batch(faces: int, batch_size: int) -> int:
  """The batch a call with ``faces`` faces is padded to: the next power of two, at most
  ``batch_size``, so a few compiled sizes serve every call and one face costs one face."""
  return min(batch_size, 1 << max(0, faces - 1).bit_length())


def window_size(crop_size: int) -> int:
  """The one padded window side: the largest window (a crop square of MAX_CROP_DOWNSCALE x
  crop_size with CONTEXT around it, +2 for rounding) rounded up to a power of two."""
  largest = math.ceil(CONTEXT * MAX_CROP_DOWNSCALE * crop_size) + 2
  return 1 << (largest - 1).bit_length()


def face_window(image: np.ndarray, square: np.ndarray, crop_size: int):
  """Cut (and for large faces downscale) the window of one crop square.

  Returns (window [n, n, 3] uint8, square in window pixels [4], window->image [3, 3]).
  """
  side = square[2] - square[0]
  centre = (square[:2] + square[2:]) / 2
  origin = np.floor(centre - CONTEXT * side / 2).astype(int)  # window pixel 0 = image pixel
  size = int(math.ceil(CONTEXT * side)) + 2
  window = np.zeros((size, size, 3), np.uint8)
  height, width = image.shape[:2]
  x0, y0 = max(origin[0], 0), max(origin[1], 0)
  x1, y1 = min(origin[0] + size, width), min(origin[1] + size, height)
  if x1 > x0 and y1 > y0:
    window[y0 - origin[1] : y1 - origin[1], x0 - origin[0] : x1 - origin[0]] = image[y0:y1, x0:x1]
  scale = 1.0
  if side > MAX_CROP_DOWNSCALE * crop_size:
    resized = max(1, round(size * MAX_CROP_DOWNSCALE * crop_size / side))
    window = np.asarray(
      Image.fromarray(window).resize((resized, resized), Image.Resampling.BILINEAR)
    )
    scale = resized / size  # pixel edges scale: x' = (x + 0.5) * scale - 0.5
  # image -> window: shift by the origin, then scale about the pixel-edge origin.
  to_window = np.array(
    [
      [scale, 0.0, (0.5 - origin[0]) * scale - 0.5],
      [0.0, scale, (0.5 - origin[1]) * scale - 0.5],
      [0.0, 0.0, 1.0],
    ]
  )
  corners = np.stack([square[:2], square[2:]])
  in_window = corners * scale + to_window[:2, 2]
  return window, in_window.reshape(4), np.linalg.inv(to_window)


def crop_window(image: np.ndarray, crop_to_image: np.ndarray, crop_size: int):
  """`face_window` for a crop given by its crop -> image pixel matrix [3, 3] (a similarity:
  turned crops too): the window of the upright square with the crop's centre and side, which
  holds the turned crop (its corners lie side / sqrt(2) from the centre, inside CONTEXT x side).

  Returns (window [n, n, 3] uint8, crop -> window [3, 3], window -> image [3, 3]).
  """
  crop_to_image = np.asarray(crop_to_image, np.float64)
  centre = geometry.apply_affine(np.full((1, 2), crop_size / 2 - 0.5), crop_to_image)[0]
  side = crop_size * math.sqrt(abs(np.linalg.det(crop_to_image[:2, :2])))
  square = np.concatenate([centre - side / 2, centre + side / 2])
  window, _, window_to_image = face_window(image, square, crop_size)
  return window, np.linalg.inv(window_to_image) @ crop_to_image, window_to_image


def _as_image(item, index: int) -> tuple[str, np.ndarray]:
  if isinstance(item, (str, os.PathLike)):
    return os.fspath(item), load_upright(item)
  image = np.asarray(item)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
    raise ValueError(f"image {index}: want [H, W, 3] uint8 RGB, got {image.dtype} {image.shape}")
  return f"image {index}", image


MIN_BOX_SIDE = 4.0  # pixels: a smaller box holds no face the model could read
MIN_BOX_INSIDE = 0.25  # fraction of a box's area that must lie on the image
MAX_BOX_SIDE = 8.0  # times the image's longer side
MAX_WINDOW_SIDE = 12288  # pixels: a face's window (CONTEXT x its crop square) stays < 0.5 GB


def check_boxes(boxes, image_hw, source: str, max_side: float | None = None) -> np.ndarray:
  """Face boxes as [N, 4] float64 (x0, y0, x1, y1 in pixels; one box may come as [4]).

  Refuses, with a ValueError naming the source, the box (its index and values) and why, a box
  that cannot frame a face of an image of image_hw = (height, width): not finite, x1 <= x0 or
  y1 <= y0, a side under MIN_BOX_SIDE or over MAX_BOX_SIDE x the image's longer side (and over
  max_side where given), or less than MIN_BOX_INSIDE of its area on the image (a typo,
  another image's box). NaN or off-image boxes would otherwise give NaN landmarks, or
  landmarks of a blank crop, flagged as usual. `predict_images` and the exported pipeline's
  `ExportedPipeline` check their boxes with it.
  """
  try:
    array = np.asarray(boxes, np.float64)
  except (TypeError, ValueError):
    array = np.zeros((0,))
  if array.ndim == 1 and array.shape[0] == 4:
    array = array[None]
  if array.ndim != 2 or array.shape[1] != 4:
    raise ValueError(f"{source}: boxes must be [N, 4] (x0, y0, x1, y1), got {boxes!r}")
  height, width = image_hw
  largest = MAX_BOX_SIDE * max(height, width)
  if max_side is not None:
    largest = min(largest, max_side)
  for index, box in enumerate(array):
    where = f"{source}: box {index} {[round(float(v), 1) for v in box]}"
    if not np.all(np.isfinite(box)):
      raise ValueError(f"{where} is not finite")
    if box[2] <= box[0] or box[3] <= box[1]:
      raise ValueError(f"{where} has x1 <= x0 or y1 <= y0 (want x0, y0, x1, y1)")
    side = max(box[2] - box[0], box[3] - box[1])
    inside_w = max(0.0, min(box[2], width - 0.5) - max(box[0], -0.5))
    inside_h = max(0.0, min(box[3], height - 0.5) - max(box[1], -0.5))
    inside = inside_w * inside_h / ((box[2] - box[0]) * (box[3] - box[1]))
    if side < MIN_BOX_SIDE or side > largest or inside < MIN_BOX_INSIDE:
      raise ValueError(
        f"{where} does not frame a face of this {width}x{height} image (side {side:.1f} px, "
        f"{100 * inside:.0f} % on the image; want a side of {MIN_BOX_SIDE:g} to "
        f"{largest:.0f} px and >= {100 * MIN_BOX_INSIDE:.0f} % on the image)"
      )
  return array


def detect_face_boxes(image: np.ndarray, calibrations) -> tuple[np.ndarray, np.ndarray, str | None]:
  """The detectors of ``calibrations`` tried in order on an [H, W, 3] uint8 image; the first
  that finds a face gives (landmark-like boxes [N, 4], its raw boxes [N, 4], its name), largest
  first. Empty arrays and None when none finds a face (or none is installed)."""
  for calibration in calibrations:
    if not detection.detector_available(calibration.cascade):
      continue
    detected = detection.detect_faces(image, calibration.cascade)
    if len(detected):
      return detection.calibrated_face_box(detected, calibration), detected, calibration.cascade
  return np.zeros((0, 4)), np.zeros((0, 4), np.float32), None


def _face_boxes(image, given, calibrations, source):
  """(landmark-like boxes [N, 4], raw detector boxes [N, 4] or None, the detector's name or
  None). Without given boxes the detectors are tried in order; the first that finds a face in
  the image gives the boxes."""
  if given is not None:
    # The crop square is the box x box_margin (1.25 by default), the window CONTEXT x that.
    largest = MAX_WINDOW_SIDE / (CONTEXT * 1.25)
    return check_boxes(given, image.shape[:2], source, max_side=largest), None, None
  boxes, detected, name = detect_face_boxes(image, calibrations)
  if name is None:
    tried = [c.cascade for c in calibrations if detection.detector_available(c.cascade)]
    raise NoFaceFoundError(
      f"{source}: no face found by {', '.join(tried) or 'any installed detector'} "
      f"(pass its box: boxes= or --boxes)"
    )
  return boxes, detected, name


@functools.lru_cache(maxsize=8)
def adaptive_inference(model):
  """The package's adaptive pipeline (`pipeline.make_adaptive_inference_fn`), built once per
  model so that every call reuses its compilations."""
  return model.model.adaptive_inference_fn(model.options)


# model -> {(policy, batch shape): its pipeline with the trace kept beside the compilation cache}
_SAVED_TRACES = weakref.WeakKeyDictionary()


def _run_saved(model, policy: str, function, arguments):
  """``function(*arguments)``, traced once per machine where the compilation cache is on
  (`pipeline.with_saved_trace`): a later process skips tracing the pipeline."""
  folder = pipeline.compilation_cache_folder()
  if folder is not None:
    saved = _SAVED_TRACES.setdefault(model, {})
    key = (policy, arguments[1].shape)
    if key not in saved:
      name = repr((policy, model.options, model.model.generator, model.model.networks))
      saved[key] = pipeline.with_saved_trace(function, arguments, name, folder)
    function = saved[key]
  return function(*arguments)


def _full_pipeline(model, windows, squares, refine_below):
  del refine_below  # the full pipeline refines every face
  arguments = (model.model.variables, windows, squares.astype(np.float32))
  return _run_saved(model, "full", model.infer, arguments)


def _adaptive_pipeline(model, windows, squares, refine_below):
  crop_to_window = np.linalg.inv(geometry.crop_matrix(squares, model.options.crop_size))
  arguments = (
    model.model.variables,
    windows,
    crop_to_window.astype(np.float32),
    np.float32(refine_below),
    np.float32(-np.inf),
  )
  return _run_saved(model, "adaptive", adaptive_inference(model), arguments)


# name -> fn(model, windows [B, n, n, 3], crop squares in window pixels [B, 4], refine_below)
COMPUTE_POLICIES = {"full": _full_pipeline, "adaptive": _adaptive_pipeline}


def predict_images(
  model,
  images_or_paths,
  boxes=None,
  batch_size: int = 8,
  errors: str = "raise",
  compute: str = "full",
  refine_below: float | None = None,
) -> list[ImagePrediction]:
  """Landmarks of every face in every image.

  Args:
    model: a `pretrained.PretrainedModel` (`load_pretrained`, or `from_trained`).
    images_or_paths: file paths (EXIF orientation applied) or [H, W, 3] uint8 RGB arrays.
    boxes: None (the package's detectors) or one entry per image: [N, 4] landmark-like face boxes
      (x0, y0, x1, y1) in upright image pixels; the crop is the box x box_margin, squared.
    batch_size: faces per pipeline call at most (a call is padded to a power of two, so that
      a few compilations serve all calls).
    errors: "raise" the first per-image error, or "collect" it in that image's result.
    compute: a `COMPUTE_POLICIES` name: "full" (the package's pipeline) or "adaptive" (the
      flip and re-crop pass only where the first pass's confidence is below refine_below).
    refine_below: the "adaptive" policy's confidence threshold (e.g.
      the package's ``model.tracking_thresholds.refine_below_detected``).
  Returns:
    one ImagePrediction per input, in order.
  """
  if errors not in ("raise", "collect"):
    raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
  if compute not in COMPUTE_POLICIES:
    raise ValueError(f"compute must be one of {', '.join(COMPUTE_POLICIES)}, got {compute!r}")
  if compute == "adaptive" and (refine_below is None or math.isnan(refine_below)):
    raise ValueError("compute='adaptive' needs refine_below (a fitted confidence threshold)")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  items = list(images_or_paths)
  if boxes is not None and len(boxes) != len(items):
    raise ValueError(f"boxes: {len(boxes)} entries for {len(items)} images")
  crop_size, margin = model.options.crop_size, float(model.config.data.box_margin)
  # faces: (image index, model box, detector box, window, square, back, detector name)
  results, faces = [], []
  for index, item in enumerate(items):
    source = f"image {index}"
    try:
      source, image = _as_image(item, index)
      face_boxes, detector_boxes, detector = _face_boxes(
        image, None if boxes is None else boxes[index], model.calibrations, source
      )
    except (OSError, ValueError) as error:
      if errors == "raise":
        raise
      results.append(ImagePrediction(source, None, [], str(error)))
      continue
    results.append(ImagePrediction(source, image.shape[:2], []))
    for face, square in enumerate(crop_squares(face_boxes, margin)):
      window, window_square, back = face_window(image, square, crop_size)
      faces.append(
        (
          index,
          face_boxes[face],
          None if detector_boxes is None else detector_boxes[face],
          window,
          window_square,
          back,
          detector,
        )
      )

  side = window_size(crop_size)
  offset = np.asarray(model.options.landmark_offset, np.float64)
  for start in range(0, len(faces), batch_size):
    chunk = faces[start : start + batch_size]
    windows, _ = pipeline.pad_images([face[3] for face in chunk])
    padded = padded_batch(len(chunk), batch_size)
    batch = np.zeros((padded, side, side, 3), np.uint8)
    batch[: len(chunk), : windows.shape[1], : windows.shape[2]] = windows
    squares = np.tile(np.array([-0.5, -0.5, crop_size - 0.5, crop_size - 0.5]), (padded, 1))
    squares[: len(chunk)] = [face[4] for face in chunk]
    out = COMPUTE_POLICIES[compute](model, batch, squares, refine_below)
    landmarks = np.asarray(out["landmarks"], np.float64)
    before_repair = np.asarray(out["hourglass_landmarks"], np.float64)
    thetas = np.asarray(out["theta"], np.float32)
    scores, reliable = np.asarray(out["scores"]), np.asarray(out["reliable"])
    for row, (index, box, detector_box, _, _, back, detector) in enumerate(chunk):
      if results[index].error:  # another face of this image already failed
        continue
      # The pipeline added the landmark offset in window pixels; it belongs in image pixels
      # (a window is downscaled for large faces).
      to_image = lambda points: (points - offset) @ back[:2, :2].T + back[:2, 2] + offset
      points = to_image(landmarks[row])
      if not np.all(np.isfinite(points)):  # never hand NaN on (JSON would not parse)
        message = f"{results[index].source}: the model gave non-finite landmarks"
        if errors == "raise":
          raise ValueError(message)
        results[index] = dataclasses.replace(results[index], faces=[], error=message)
        continue
      results[index].faces.append(
        FacePrediction(
          box=np.asarray(box, np.float32),
          detector_box=None if detector_box is None else np.asarray(detector_box, np.float32),
          detector=detector,
          landmarks=points.astype(np.float32),
          scores=scores[row].astype(np.float32),
          reliable=reliable[row].astype(bool),
          hourglass_landmarks=to_image(before_repair[row]).astype(np.float32),
          theta=thetas[row],
        )
      )
  return results


def prediction_to_json(result: ImagePrediction, exif_orientation: int | None = None) -> dict:
  """The JSON document `predict.py` writes per image."""
  document = {
    "image": result.source,
    "coordinates": "0-based pixels of the upright image (EXIF orientation applied), "
    "x right, y down, integer values at pixel centres",
    "image_size": None
    if result.image_size is None
    else {"height": int(result.image_size[0]), "width": int(result.image_size[1])},
    "exif_orientation": exif_orientation,
    "faces": [
      {
        "box": [round(float(v), 2) for v in face.box],
        "box_source": "given" if face.detector is None else f"{face.detector} (calibrated)",
        "detector_box": None
        if face.detector_box is None
        else [round(float(v), 2) for v in face.detector_box],
        "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in face.landmarks],
        "scores": [round(float(s), 4) for s in face.scores],
        "reliable": [bool(r) for r in face.reliable],
        **(
          {}
          if face.hourglass_landmarks is None
          else {
            "hourglass_landmarks": [
              [round(float(x), 3), round(float(y), 3)] for x, y in face.hourglass_landmarks
            ]
          }
        ),
        **(
          {}
          if face.theta is None
          else {"theta": [[round(float(v), 5) for v in row] for row in face.theta]}
        ),
      }
      for face in result.faces
    ],
  }
  if result.error:
    document["error"] = result.error
  return document


def exif_orientation(path: str) -> int | None:
  """The EXIF orientation tag (1-8) of a file, None when absent or unreadable."""
  try:
    with Image.open(path) as image:
      value = image.getexif().get(0x0112)
  except (OSError, ValueError, SyntaxError):
    return None
  return None if value is None else int(value)


def overlay_image(image: np.ndarray, faces) -> Image.Image:
  """The image with each face's box (blue), reliable landmarks (green) and repaired landmarks
  (red: unreliable, replaced by the shape dictionary), as a PIL image."""
  drawn = [(face.landmarks, ~np.asarray(face.reliable), face.box) for face in faces]
  return overlays.draw_landmarks(image, drawn)


def save_overlay(path: str, image: np.ndarray, faces) -> None:
  """`overlay_image` as a PNG at ``path``, written whole or not at all."""
  overlays.save_png(overlay_image(image, faces), path)

"""Video clips with ground truth made from annotated photos: known motion, an occluder, cuts
and frames without a face (the tracker's benchmark and the fit of its thresholds).

A clip is one face, its photo turned into FRAME_SIZE frames at FRAME_RATE by a similarity per
frame (the face's landmark box FACE_SIZE pixels wide, centred) plus sensor noise (Gaussian, sd
NOISE grey levels, drawn per frame), through these segments (`SEGMENTS`):

  still 20 | pan +-100 px 45 | zoom 1 -> 1.25 -> 0.8 -> 1 45 | roll 0 -> 30 -> -30 -> 0 degrees 60
  | an occluder crossing the face (a band of the photo's own texture, 0.35 face wide) 40
  | cut to another photo, its face 160 px to the left 20 | back to the first 25
  | no face (the frame blurred beyond recognition) 15 | the face again 25

The ground truth of a frame is the photo's landmarks through that frame's similarity; the
occluder's frames flag the landmarks it covers. Frames are rendered one at a time, the same
every time for one `ClipSpec` (its seed draws the noise).
"""

import dataclasses
import math

import cv2
import numpy as np

from msm_jax.data import images as image_io

FRAME_SIZE = (640, 480)  # width, height
FRAME_RATE = 30.0
FACE_SIZE = 160.0  # the landmark box's longer side in the frame, pixels
NOISE = 2.0  # sensor noise, grey levels
CUT_OFFSET = (-160.0, 0.0)  # where the other photo's face is, from the first face's place
SEGMENTS = (
  ("still", 20),
  ("pan", 45),
  ("zoom", 45),
  ("roll", 60),
  ("occluder", 40),
  ("cut", 20),
  ("back", 25),
  ("no face", 15),
  ("return", 25),
)
CUTS = ("cut", "back", "return")  # segments that start with a cut


def _pan(phase):
  return 100.0 * math.sin(2 * math.pi * phase), 0.0, 1.0, 0.0


def _zoom(phase):
  return 0.0, 0.0, math.exp(math.log(1.25) * math.sin(2 * math.pi * phase)), 0.0


def _roll(phase):
  return 0.0, 0.0, 1.0, 30.0 * math.sin(2 * math.pi * phase)


def _still(phase):
  return 0.0, 0.0, 1.0, 0.0


# segment -> phase in [0, 1) -> (dx, dy, scale, roll degrees) of the face in the frame
MOTIONS = {"pan": _pan, "zoom": _zoom, "roll": _roll}


@dataclasses.dataclass(frozen=True)
class ClipFrame:
  """image [H, W, 3] uint8 RGB; truth [L, 2] of the clip's face (None: not in view); others:
  the other annotated faces in view; scene: changes at each cut; occluded: [L] bool."""

  image: np.ndarray
  truth: np.ndarray | None
  others: list
  segment: str
  scene: int
  occluded: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """One clip: its face (photo + landmarks + the photo's other faces), the face the clip cuts
  to, and the seed of its noise."""

  path: str
  truth: np.ndarray
  others: tuple
  cut_path: str
  cut_truth: np.ndarray
  cut_others: tuple
  seed: int
  segment_length: int | None = None  # every segment this many frames (short test clips)


def _box(points):
  return np.concatenate([points.min(axis=0), points.max(axis=0)])


def _similarity(truth, dx, dy, scale, roll_degrees) -> np.ndarray:
  """[3, 3] photo -> frame: the face's landmark box centre to the frame centre + (dx, dy),
  its longer side to FACE_SIZE x scale, turned by roll."""
  box = _box(truth)
  centre = (box[:2] + box[2:]) / 2
  zoom = scale * FACE_SIZE / max(box[2] - box[0], box[3] - box[1])
  angle = math.radians(roll_degrees)
  cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
  target = np.array([FRAME_SIZE[0] / 2 + dx, FRAME_SIZE[1] / 2 + dy])
  linear = np.array([[cos, -sin], [sin, cos]])
  matrix = np.eye(3)
  matrix[:2, :2], matrix[:2, 2] = linear, target - linear @ centre
  return matrix


def _moved(points, matrix):
  return points @ matrix[:2, :2].T + matrix[:2, 2]


def _texture(photo, truth, size) -> np.ndarray:
  """The occluder's texture: the photo's corner farthest from the face, resized."""
  height, width = photo.shape[:2]
  centre = truth.mean(axis=0)
  side = max(8, min(height, width) // 3)
  corners = [(0, 0), (width - side, 0), (0, height - side), (width - side, height - side)]
  x, y = max(corners, key=lambda corner: np.hypot(*(np.add(corner, side / 2) - centre)))
  return cv2.resize(np.ascontiguousarray(photo[y : y + side, x : x + side]), size)


def clip_frames(spec: ClipSpec):
  """The clip's `ClipFrame`s, rendered one at a time (the same every time)."""
  photos = {
    "first": image_io.load_image(spec.path, apply_exif=False),
    "cut": image_io.load_image(spec.cut_path, apply_exif=False),
  }
  rng = np.random.default_rng(spec.seed)
  band = (int(0.35 * FACE_SIZE), int(1.5 * FACE_SIZE))
  texture = _texture(photos["first"], spec.truth, band)
  scene = 0
  for segment, length in SEGMENTS:
    length = spec.segment_length or length
    if segment in CUTS or segment == "no face":
      scene += 1
    for step in range(length):
      phase = step / length
      dx, dy, scale, roll = MOTIONS.get(segment, _still)(phase)
      photo, truth, others = photos["first"], spec.truth, spec.others
      if segment == "cut":
        photo, truth, others = photos["cut"], spec.cut_truth, spec.cut_others
        matrix = _similarity(truth, *CUT_OFFSET, 1.0, 0.0)
      else:
        matrix = _similarity(truth, dx, dy, scale, roll)
      image = cv2.warpAffine(photo, matrix[:2], FRAME_SIZE, flags=cv2.INTER_LINEAR)
      in_frame = _moved(truth, matrix)
      occluded = None
      if segment == "occluder":
        box = _box(in_frame)
        left = int(box[0] - band[0] + phase * (box[2] - box[0] + band[0]))
        top = int((box[1] + box[3]) / 2 - band[1] / 2)
        image, occluded = _occlude(image, texture, left, top, in_frame)
      if segment == "no face":
        image = cv2.GaussianBlur(image, (0, 0), 25)
        in_frame, others = None, ()
      noise = rng.normal(0, NOISE, image.shape)
      image = np.clip(image + noise, 0, 255).astype(np.uint8)
      others = [_moved(points, matrix) for points in others]
      yield ClipFrame(image, in_frame, others, segment, scene, occluded)


def _occlude(image, texture, left, top, points):
  height, width = image.shape[:2]
  band_h, band_w = texture.shape[:2]
  x0, y0 = max(left, 0), max(top, 0)
  x1, y1 = min(left + band_w, width), min(top + band_h, height)
  image = image.copy()
  if x1 > x0 and y1 > y0:
    image[y0:y1, x0:x1] = texture[y0 - top : y1 - top, x0 - left : x1 - left]
  x, y = points[:, 0], points[:, 1]
  covered = (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)
  return image, covered


def clip_specs(records, count: int, seed: int, segment_length=None) -> list[ClipSpec]:
  """``count`` clips, face i cutting to face i + 1 (the next photo), each with the other
  annotated faces of its photo."""
  by_image = {}
  for record in records:
    by_image.setdefault(record.image_path, []).append(np.asarray(record.landmarks, np.float64))
  specs = []
  for index, record in enumerate(records[:count]):
    other = next(
      (r for r in records[index + 1 :] + records[:index] if r.image_path != record.image_path),
      record,
    )
    truth = np.asarray(record.landmarks, np.float64)
    cut_truth = np.asarray(other.landmarks, np.float64)
    specs.append(
      ClipSpec(
        record.image_path,
        truth,
        tuple(p for p in by_image[record.image_path] if not np.array_equal(p, truth)),
        other.image_path,
        cut_truth,
        tuple(p for p in by_image[other.image_path] if not np.array_equal(p, cut_truth)),
        seed + index,
        segment_length,
      )
    )
  return specs

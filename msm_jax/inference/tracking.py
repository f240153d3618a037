"""Faces tracked through a video: landmarks per frame, each frame's crops made from the last.

Per frame (`Tracker.update`):

1. Each tracked face is cropped where its last landmarks say it is: the re-crop pass's square
   (`crop_from_landmarks`: the landmarks' tight box x box_margin in the frame where the face
   is upright, turned by the roll of their similarity onto the dictionary's mean shape),
   moved by the face's velocity (centre, log side and roll, constant over the last two frames).
2. The adaptive pipeline (`pipeline.make_adaptive_inference_fn`) runs once per face: one
   landmark-network pass, and the flip and a re-crop pass only where the first pass's
   confidence is below ``refine_below``. It runs on a tracked face every ``network_every``
   frames; on the frames between, the face's landmarks are carried by the similarity that
   the optical flow of its reliable landmarks agrees on (`image_motion`), and where the flow
   finds none (a cut, a covered face, blur) the pipeline runs on that frame instead.
3. A face whose first-pass confidence falls below ``lost_below`` is lost: its crop no longer
   holds a face (a cut, an occluder over most of it, the face left the frame).
4. The detector runs on the first frame, on a frame where a face was lost or where the flow
   finds no motion under one (a cut may put another face in its crop, which the network
   would follow), while no face is tracked, and every ``detect_every`` frames to catch new
   faces. Its boxes that do not overlap a tracked face go through the same pipeline from the
   detector's crop; one whose confidence is below ``lost_below`` (a false detection) is
   dropped.
5. Ids: a new face takes the id of a face lost in the last ``remember_frames`` frames whose
   last box it overlaps (IoU >= `detection.MATCH_MIN_IOU`), else a new one; two tracks that
   end up on one face (IoU >= DUPLICATE_IOU) keep the older.
6. The landmarks are smoothed without lag (`stabilised_smoothing`): the face's motion as a
   whole, the similarity that maps its landmarks onto the dictionary's mean shape, is taken as
   measured; a One Euro filter per landmark (`smoothing.py`) smooths only what is left in that
   face-fixed frame (the noise, and the face's own deformation). A filter on the image
   coordinates would lag behind a moving head by a fixed share of its speed; this one only
   behind a changing expression. The filter restarts whenever a face is (re)found by the
   detector; landmarks flagged unreliable (rebuilt by the shape repair) lean more on the
   previous frames. The crops of step 1 come from the unsmoothed landmarks, so the smoothing
   never feeds back into what the network sees.

The thresholds (`TrackingThresholds`) are fitted per package on validation clips and kept in
the package (`package.py` fits them; `python -m msm_jax.eval.tracking_fit` refits them); a
package without them is tracked with `UNFITTED`. Every call of the pipeline has one shape,
[batch, window, window, 3] (`prediction.window_size`), so the whole video runs on one
compilation (`warm_up` makes it before the first frame).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np

from msm_jax.core import geometry
from msm_jax.inference import detection, image_motion, pipeline, prediction, smoothing

DUPLICATE_IOU = 0.5  # two tracks overlapping this much follow one face


@dataclasses.dataclass(frozen=True)
class TrackingThresholds:
  """Confidences (`pipeline.face_confidence`) that steer the tracker, fitted on validation
  clips (module docstring). lost_below: a tracked face whose first pass falls below is lost;
  refine_below: a tracked face's first pass below it gets the flip and a re-crop pass;
  refine_below_detected: the same for a first pass on a detector's crop (new faces, photos).
  fitted: how they were fitted (the command, the data, the rates); informational."""

  lost_below: float
  refine_below: float
  refine_below_detected: float
  fitted: dict = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    return {
      "lost_below": float(self.lost_below),
      "refine_below": float(self.refine_below),
      "refine_below_detected": float(self.refine_below_detected),
      "fitted": self.fitted,
    }

  @classmethod
  def from_dict(cls, data, source: str = "thresholds") -> TrackingThresholds:
    """A `to_dict` dict back; a ValueError naming ``source`` when it is not one."""
    names = ("lost_below", "refine_below", "refine_below_detected")
    try:
      values = [float(data[name]) for name in names]
    except (KeyError, TypeError, ValueError) as error:
      raise ValueError(
        f"{source}: want numbers {', '.join(names)} ({type(error).__name__}: {error})"
      ) from None
    if any(math.isnan(value) for value in values):
      raise ValueError(f"{source}: a threshold is NaN")
    fitted = data.get("fitted", {})
    return cls(*values, fitted=dict(fitted) if isinstance(fitted, dict) else {})

  @classmethod
  def load(cls, path: str) -> TrackingThresholds:
    try:
      with open(path, encoding="utf-8") as file:
        data = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
      raise ValueError(f"{path}: cannot read thresholds ({error})") from None
    return cls.from_dict(data, path)


# A package without fitted thresholds: every face refined (the package's whole pipeline, as
# for a photo), and a face lost below 0.1. `pipeline.face_confidence` is the share of each
# map within Eq. 9's window around its peak: (2r + 1)^2 / h^2 ~ 0.002 for a flat 64 x 64 map,
# ~0.4 for the Gaussian targets these networks are trained on, so 0.1 parts them for any
# package trained with the spatial-softmax loss, without a fit.
UNFITTED = TrackingThresholds(
  lost_below=0.1,
  refine_below=math.inf,
  refine_below_detected=math.inf,
  fitted={"data": "none: the package holds no fitted thresholds"},
)


@dataclasses.dataclass(frozen=True)
class TrackerOptions:
  """detect_every: frames between detector runs that look for new faces (0: only when a face
  is lost or none is tracked); max_faces: most faces tracked at once; remember_frames: how long
  a lost face's id waits for a face found where it was; smoothing: the One Euro filter's
  constants, or None for the pipeline's landmarks as they are; compute: "adaptive" or "full"
  (every face refined: the package's pipeline from the tracked crop); fallback_detectors: also
  try the package's later detectors when the first finds nothing (slower on frames without a
  face); frame_rate: the frames per second assumed when update() gets no time;
  network_every: a tracked face's landmark network runs every this many frames, its landmarks
  carried by the image's motion between (1: every frame)."""

  detect_every: int = 30
  max_faces: int = 4
  remember_frames: int = 30
  smoothing: smoothing.OneEuroParameters | None = smoothing.OneEuroParameters()
  compute: str = "adaptive"
  fallback_detectors: bool = False
  frame_rate: float = 30.0
  network_every: int = 3

  def __post_init__(self):
    for name in ("detect_every", "remember_frames"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    for name in ("max_faces", "network_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.compute not in ("adaptive", "full"):
      raise ValueError(f"compute must be 'adaptive' or 'full', got {self.compute!r}")
    if not (math.isfinite(self.frame_rate) and self.frame_rate > 0):
      raise ValueError(f"frame_rate must be a finite number > 0, got {self.frame_rate}")


@dataclasses.dataclass(frozen=True)
class TrackedFace:
  """One face in one frame. track_id: the same for the same face across frames; box: [4] the
  tight box of ``landmarks``; landmarks: [L, 2] smoothed (image pixels); raw_landmarks: [L, 2]
  the pipeline's, unsmoothed; scores: [L] Eq. 9, normalised; reliable: [L] bool (False:
  rebuilt by the shape repair); confidence: the last pass's `pipeline.face_confidence`;
  detected: found by the detector on this frame (new or found again); refined: the flip and
  the re-crop pass ran; first_confidence, first_landmarks: the first pass's confidence (the
  one the loss and refinement tests read) and landmarks (raw_landmarks where not refined);
  measured: the network ran on this face in this frame (False: the landmarks, all three sets,
  were carried from the last frame by the image's motion; scores, reliable and the
  confidences are the last network frame's)."""

  track_id: int
  box: np.ndarray
  landmarks: np.ndarray
  raw_landmarks: np.ndarray
  scores: np.ndarray
  reliable: np.ndarray
  confidence: float
  detected: bool
  refined: bool
  first_confidence: float = math.nan
  first_landmarks: np.ndarray | None = None
  measured: bool = True


@dataclasses.dataclass(frozen=True)
class CropPose:
  """A square crop: centre (x, y) in image pixels, side in pixels, and roll: the angle
  (radians) that turns the image so that the face is upright in the crop."""

  centre: np.ndarray
  side: float
  roll: float


def landmark_box(points: np.ndarray) -> np.ndarray:
  """[4] the tight box (x0, y0, x1, y1) of [L, 2] points."""
  return np.concatenate([points.min(axis=0), points.max(axis=0)])


def rotation(angle: float) -> np.ndarray:
  """[3, 3] turning points by ``angle`` radians about the origin (x right, y down)."""
  cos, sin = math.cos(angle), math.sin(angle)
  return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def crop_from_landmarks(
  points: np.ndarray, mean_shape: np.ndarray, margin: float, upright: bool = True
) -> CropPose:
  """The re-crop pass's crop of landmarks [L, 2] (image pixels), as
  `pipeline.landmark_crop_to_image` makes it: turned by the roll of their similarity onto the
  dictionary's ``mean_shape`` [L, 2] (``upright``), their tight box there x ``margin``,
  squared."""
  points = np.asarray(points, np.float64)
  roll = 0.0
  if upright:
    to_mean = geometry.estimate_similarity(points, np.asarray(mean_shape, np.float64))
    roll = math.atan2(to_mean[1, 0], to_mean[0, 0])
  turn = rotation(roll)
  turned = geometry.apply_affine(points, turn)
  low, high = turned.min(axis=0), turned.max(axis=0)
  centre = geometry.apply_affine(((low + high) / 2)[None], np.linalg.inv(turn))[0]
  return CropPose(centre, float(margin * np.max(high - low)), roll)


def crop_to_image(pose: CropPose, crop_size: int) -> np.ndarray:
  """[3, 3] crop pixels -> image pixels of a `CropPose`."""
  turn = rotation(pose.roll)
  centre = geometry.apply_affine(np.asarray(pose.centre, np.float64)[None], turn)[0]
  square = np.concatenate([centre - pose.side / 2, centre + pose.side / 2])
  return np.linalg.inv(geometry.crop_matrix(square, crop_size) @ turn)


def detector_crop(box: np.ndarray, margin: float) -> CropPose:
  """The upright crop of a landmark-like face box: the box x ``margin``, squared (as photos)."""
  square = prediction.crop_squares(box, margin)[0]
  return CropPose((square[:2] + square[2:]) / 2, float(square[2] - square[0]), 0.0)


def wrapped(angle: float) -> float:
  """An angle in (-pi, pi]."""
  return math.pi - (math.pi - angle) % (2 * math.pi)


def predicted_pose(earlier: tuple, last: tuple, time: float) -> CropPose:
  """Where a crop will be at ``time``, moving from ``earlier`` to ``last`` ((time, CropPose)
  pairs) at constant velocity: centre and roll linearly, the side geometrically (a zoom is a
  constant factor per second)."""
  (time_0, pose_0), (time_1, pose_1) = earlier, last
  ahead = (time - time_1) / (time_1 - time_0)
  return CropPose(
    pose_1.centre + ahead * (pose_1.centre - pose_0.centre),
    pose_1.side * (pose_1.side / pose_0.side) ** ahead,
    pose_1.roll + ahead * wrapped(pose_1.roll - pose_0.roll),
  )


def pose_fits_frame(pose: CropPose, frame_hw, crop_size: int) -> bool:
  """Whether a crop can frame a face of the frame: finite, a face box side within
  `prediction.check_boxes`' limits, and enough of it on the frame."""
  if not (np.all(np.isfinite(pose.centre)) and math.isfinite(pose.side) and pose.side > 0):
    return False
  box = np.concatenate([pose.centre - pose.side / 2, pose.centre + pose.side / 2])
  try:
    prediction.check_boxes(box, frame_hw, "crop", prediction.MAX_WINDOW_SIDE / prediction.CONTEXT)
  except ValueError:
    return False
  return True


def stabilised_smoothing(
  state: smoothing.OneEuroState | None,
  points: np.ndarray,
  reliable: np.ndarray,
  time: float,
  mean_shape: np.ndarray,
  parameters: smoothing.OneEuroParameters,
) -> tuple[smoothing.OneEuroState | None, np.ndarray]:
  """One frame of landmarks [L, 2] through the One Euro filter in the face's own frame:
  (the filter's state, the smoothed landmarks in image pixels). ``state`` None starts it.

  The similarity onto ``mean_shape`` is fitted on every landmark alike: fitted on the
  reliable ones only, the frame would jump whenever a flag flips (an occluder's edge crossing
  a landmark), and the jump would pass unsmoothed to every landmark. The filter's speeds are
  in mean shape sizes per second (its box's longer side)."""
  try:
    to_face = geometry.estimate_similarity(points, mean_shape)
  except ValueError:  # landmarks all in one point: no frame to smooth in; start again
    return None, points
  in_face = geometry.apply_affine(points, to_face)
  if state is None:
    state = smoothing.start(in_face, time)
  else:
    size = np.ptp(mean_shape, axis=0).max()
    cutoff_scale = np.where(reliable, 1.0, parameters.unreliable_cutoff_scale)
    state = smoothing.step(state, in_face, time, parameters, size, cutoff_scale)
  return state, geometry.apply_affine(state.value, np.linalg.inv(to_face))


@dataclasses.dataclass
class TrackerStatistics:
  """Counts since the tracker started: frames, detector runs, faces refined (flip + re-crop
  pass), tracks lost, faces found by the detector (new or found again), faces carried by the
  image's motion instead of a network pass, faces whose pixels the flow could not follow
  from the last frame."""

  frames: int = 0
  detector_runs: int = 0
  refined: int = 0
  lost: int = 0
  found: int = 0
  carried: int = 0
  unfollowed: int = 0


@dataclasses.dataclass
class _Track:
  track_id: int
  poses: list  # (time, CropPose) of its last two frames
  face: TrackedFace
  filter_state: smoothing.OneEuroState | None
  lost_frame: int | None = None
  carried: int = 0  # frames since the network last ran on it


def package_thresholds(model) -> TrackingThresholds:
  """The package's fitted thresholds, or `UNFITTED` with a warning that says how to fit them."""
  if model.tracking_thresholds is not None:
    return model.tracking_thresholds
  warnings.warn(
    "the package holds no tracking thresholds: every face is refined (slower); fit them with "
    "`python -m msm_jax.eval.tracking_fit --model PACKAGE --config CONFIG`",
    stacklevel=3,
  )
  return UNFITTED


def _package_detector(model, fallback: bool):
  calibrations = model.calibrations if fallback else model.calibrations[:1]
  return lambda frame: prediction.detect_face_boxes(frame, calibrations)[0]


class Tracker:
  """Landmarks of the faces of a video, frame after frame (module docstring).

    tracker = Tracker(pretrained.load_pretrained())
    for frame in frames:            # [H, W, 3] uint8 RGB
      for face in tracker.update(frame):
        face.track_id, face.landmarks, face.reliable

  model: a `pretrained.PretrainedModel`. thresholds: its `TrackingThresholds` (default: the
  package's own, else `UNFITTED` with a warning). detect: frame -> landmark-like face boxes
  [N, 4], largest first (default: the package's detector, `prediction.detect_face_boxes`).
  """

  def __init__(
    self,
    model,
    options: TrackerOptions = TrackerOptions(),
    thresholds: TrackingThresholds | None = None,
    detect=None,
  ):
    self.model, self.options = model, options
    self.thresholds = package_thresholds(model) if thresholds is None else thresholds
    self._detect = detect or _package_detector(model, options.fallback_detectors)
    self._infer = None  # `_pipeline`
    variables = model.model.variables
    self._mean_shape = np.mean(np.asarray(variables["dictionary"], np.float64), axis=0)
    self._crop_size = model.options.crop_size
    self._window = prediction.window_size(self._crop_size)
    # On a CPU the pipeline runs face by face anyway (`PipelineOptions.per_face`): a batch of
    # one costs nothing extra and a padded face would cost a whole pass.
    self._batch = 1 if model.options.per_face else 4
    self.statistics = TrackerStatistics()
    self._tracks: list[_Track] = []
    self._lost: list[_Track] = []
    self._next_id = 0
    self._frame = -1
    self._since_detection = 0
    self._time = None
    self._grey = None  # the last frame, as `image_motion` reads it

  def warm_up(self) -> None:
    """Load the detector and compile (or load from the persistent cache) the one shape every
    frame uses: the first frame then costs what any frame does. The detector goes first:
    its model loads slower while XLA's threads are still busy after a computation."""
    self._detect(np.zeros((64, 64, 3), np.uint8))
    crops = np.tile(np.eye(3, dtype=np.float32), (self._batch, 1, 1))
    windows = np.zeros((self._batch, self._window, self._window, 3), np.uint8)
    self._call(windows, crops, math.inf, -math.inf)

  def _pipeline(self, arguments):
    """The adaptive pipeline, its trace kept beside the compilation cache where there is one
    (`pipeline.with_saved_trace`): a later process starts without tracing it."""
    if self._infer is None:
      model = self.model
      key = repr(("adaptive", model.options, model.model.generator, model.model.networks))
      self._infer = pipeline.with_saved_trace(
        prediction.adaptive_inference(model), arguments, key, pipeline.compilation_cache_folder()
      )
    return self._infer

  def _call(self, windows, crops, refine_below: float, keep_above: float) -> dict:
    variables = self.model.model.variables
    arguments = (variables, windows, crops, np.float32(refine_below), np.float32(keep_above))
    out = self._pipeline(arguments)(*arguments)
    return {name: np.asarray(value) for name, value in out.items()}

  def _run(self, frame, poses: list[CropPose], refine_below: float, keep_above: float) -> list:
    """The adaptive pipeline on the crops ``poses`` of ``frame``: one dict per crop (image
    pixels)."""
    if self.options.compute == "full":
      refine_below = math.inf
    offset = np.asarray(self.model.options.landmark_offset, np.float64)
    results = []
    for start in range(0, len(poses), self._batch):
      chunk = poses[start : start + self._batch]
      windows = np.zeros((self._batch, self._window, self._window, 3), np.uint8)
      crops = np.tile(np.eye(3), (self._batch, 1, 1))
      backs = []
      for row, pose in enumerate(chunk):
        window, crops[row], back = prediction.crop_window(
          frame, crop_to_image(pose, self._crop_size), self._crop_size
        )
        windows[row, : window.shape[0], : window.shape[1]] = window
        backs.append(back)
      out = self._call(windows, crops.astype(np.float32), refine_below, keep_above)
      for row, back in enumerate(backs):
        # The pipeline added the landmark offset in window pixels; it belongs in image pixels.
        to_image = lambda points: (points - offset) @ back[:2, :2].T + back[:2, 2] + offset
        results.append(
          {
            "landmarks": to_image(out["landmarks"][row].astype(np.float64)),
            "first_landmarks": to_image(out["first_landmarks"][row].astype(np.float64)),
            "scores": out["scores"][row].astype(np.float32),
            "reliable": out["reliable"][row].astype(bool),
            "confidence": float(out["confidence"][row]),
            "first_confidence": float(out["first_confidence"][row]),
            "refined": bool(out["refined"][row]),
          }
        )
    return results

  def _time_of(self, time) -> float:
    step = 1.0 / self.options.frame_rate
    if time is None:
      return self._frame * step
    time = float(time)
    if self._time is not None and not time > self._time:  # a repeated or garbled timestamp
      return self._time + step
    return time

  def _crop_of(self, points: np.ndarray) -> CropPose:
    """The re-crop pass's crop of a face's landmarks [L, 2] (image pixels), the package's."""
    options = self.model.options
    return crop_from_landmarks(points, self._mean_shape, options.box_margin, options.upright_recrop)

  def _observe(self, track: _Track, result: dict, time: float, detected: bool) -> None:
    """Take a pipeline result into a track: its pose, smoothing and face."""
    points = result["landmarks"]
    if not np.all(np.isfinite(points)):
      track.lost_frame = self._frame
      return
    track.poses = [] if detected else track.poses[-1:]
    track.poses.append((time, self._crop_of(points)))
    track.carried = 0
    smoothed = points
    if self.options.smoothing is not None:
      track.filter_state, smoothed = stabilised_smoothing(
        None if detected else track.filter_state,
        points,
        result["reliable"],
        time,
        self._mean_shape,
        self.options.smoothing,
      )
    track.face = TrackedFace(
      track_id=track.track_id,
      box=landmark_box(smoothed).astype(np.float32),
      landmarks=smoothed.astype(np.float32),
      raw_landmarks=points.astype(np.float32),
      scores=result["scores"],
      reliable=result["reliable"],
      confidence=result["confidence"],
      detected=detected,
      refined=result["refined"],
      first_confidence=result["first_confidence"],
      first_landmarks=result["first_landmarks"].astype(np.float32),
    )
    self.statistics.refined += int(result["refined"])

  def _motion(self, track: _Track, grey: np.ndarray) -> np.ndarray | None:
    """The similarity that carries the track's face from the last frame to this one, or None
    where the flow finds none (a cut, a covered face, blur; or no last frame)."""
    previous = self._grey
    if previous is None or previous.shape != grey.shape:
      return None
    face = track.face
    return image_motion.similarity_between(previous, grey, face.raw_landmarks[face.reliable])

  def _carry(self, track: _Track, motion: np.ndarray | None, time: float) -> bool:
    """Between two network frames: the track's landmarks moved by the image's ``motion``
    since the last frame; whether they were (False: the network is due, or there is no
    motion)."""
    if motion is None or track.carried + 1 >= self.options.network_every:
      return False
    face = track.face

    def move(points):
      return geometry.apply_affine(np.asarray(points, np.float64), motion).astype(np.float32)

    landmarks, raw = move(face.landmarks), move(face.raw_landmarks)
    track.poses = track.poses[-1:] + [(time, self._crop_of(raw))]
    track.face = dataclasses.replace(
      face,
      box=landmark_box(landmarks),
      landmarks=landmarks,
      raw_landmarks=raw,
      first_landmarks=move(face.first_landmarks),
      detected=False,
      refined=False,
      measured=False,
    )
    track.carried += 1
    self.statistics.carried += 1
    return True

  def _follow(self, frame, grey: np.ndarray, time: float) -> bool:
    """Step 1-3 for every tracked face; whether one was lost, or the image under one changed
    so that the flow finds no motion there (a cut: the detector should look)."""
    frame_hw = frame.shape[:2]
    moving, poses, lost = [], [], False
    for track in self._tracks:
      motion = self._motion(track, grey)
      # A face whose pixels no longer follow from the last frame's: its crop may hold another
      # face now (a cut to a photo with a face there), which the network's confidence alone
      # would not lose.
      if motion is None and self._grey is not None:
        lost = True
        self.statistics.unfollowed += 1
      if self._carry(track, motion, time):
        continue
      pose = track.poses[-1][1]
      if len(track.poses) == 2:
        pose = predicted_pose(*track.poses, time)
      if pose_fits_frame(pose, frame_hw, self._crop_size):
        moving.append(track)
        poses.append(pose)
      else:
        track.lost_frame, lost = self._frame, True
    lost_below = self.thresholds.lost_below
    results = self._run(frame, poses, self.thresholds.refine_below, lost_below)
    for track, result in zip(moving, results):
      if result["first_confidence"] < lost_below:
        track.lost_frame = self._frame
      else:
        self._observe(track, result, time, detected=False)
    for track in self._tracks:
      if track.lost_frame is not None:
        lost = True
        self.statistics.lost += 1
        self._lost.append(track)
    self._tracks = [track for track in self._tracks if track.lost_frame is None]
    return lost

  def _find(self, frame, time: float) -> None:
    """Step 4-5: the detector's faces that no track follows, as tracks."""
    self.statistics.detector_runs += 1
    self._since_detection = 0
    boxes = np.asarray(self._detect(frame), np.float64).reshape(-1, 4)
    followed = np.array([track.face.box for track in self._tracks]).reshape(-1, 4)
    taken = {found for found, _ in detection.match_boxes(boxes, followed)}
    room = self.options.max_faces - len(self._tracks)
    fresh = [box for index, box in enumerate(boxes) if index not in taken][: max(room, 0)]
    margin = self.model.options.box_margin
    fresh = [detector_crop(box, margin) for box in fresh]
    fresh = [pose for pose in fresh if pose_fits_frame(pose, frame.shape[:2], self._crop_size)]
    results = self._run(frame, fresh, self.thresholds.refine_below_detected, -math.inf)
    for result in results:
      if result["confidence"] < self.thresholds.lost_below:
        continue  # the detector's box holds no face the model can read
      track = _Track(self._claim_id(landmark_box(result["landmarks"])), [], None, None)
      self._observe(track, result, time, detected=True)
      if track.lost_frame is None:
        self._tracks.append(track)
        self.statistics.found += 1

  def _claim_id(self, box: np.ndarray) -> int:
    """The id of the remembered lost face that ``box`` overlaps most, else a new one."""
    remembered = [track.face.box for track in self._lost]
    pairs = detection.match_boxes(np.asarray(box)[None], np.array(remembered).reshape(-1, 4))
    if pairs:
      return self._lost.pop(pairs[0][1]).track_id
    self._next_id += 1
    return self._next_id - 1

  def _drop_duplicates(self) -> None:
    """Keep the older of two tracks that follow one face."""
    kept = []
    for track in sorted(self._tracks, key=lambda track: track.track_id):
      boxes = np.array([other.face.box for other in kept]).reshape(-1, 4)
      if not len(kept) or detection.box_iou(track.face.box, boxes).max() < DUPLICATE_IOU:
        kept.append(track)
    self._tracks = kept

  def update(self, frame: np.ndarray, time: float | None = None) -> list[TrackedFace]:
    """The faces of the next frame ([H, W, 3] uint8 RGB), by track id.

    time: the frame's time in seconds (default: its index / options.frame_rate); times that
    do not increase are replaced by the last one plus a frame."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or 0 in frame.shape:
      raise ValueError(
        f"Tracker.update: want an [H, W, 3] uint8 RGB frame, got {frame.dtype} {frame.shape}"
      )
    self._frame += 1
    self.statistics.frames += 1
    time = self._time = self._time_of(time)
    grey = image_motion.grey(frame)
    lost = self._follow(frame, grey, time)
    self._grey = grey
    self._since_detection += 1
    every = self.options.detect_every
    if not self._tracks or lost or (every and self._since_detection >= every):
      self._find(frame, time)
    self._drop_duplicates()
    horizon = self._frame - self.options.remember_frames
    self._lost = [track for track in self._lost if track.lost_frame >= horizon]
    return [track.face for track in sorted(self._tracks, key=lambda track: track.track_id)]


def face_to_json(face: TrackedFace) -> dict:
  """One face of a frame's JSON line (the format is in docs/video.md)."""
  return {
    "id": int(face.track_id),
    "box": np.round(face.box.astype(np.float64), 2).tolist(),
    "landmarks": np.round(face.landmarks.astype(np.float64), 2).tolist(),
    "scores": np.round(face.scores.astype(np.float64), 3).tolist(),
    "reliable": face.reliable.astype(bool).tolist(),
    "confidence": round(float(face.confidence), 4),
    "detected": bool(face.detected),
    "refined": bool(face.refined),
    "measured": bool(face.measured),
  }


def frame_to_json(index: int, time: float, faces) -> dict:
  """The JSON line of one frame: its index, time (seconds) and faces."""
  return {
    "frame": int(index),
    "time": round(float(time), 4),
    "faces": [face_to_json(face) for face in faces],
  }

"""The video tracker on generated clips whose landmark motion is known.

The faces are 68 coloured dots, each landmark its own colour, and the landmark network is a
stand-in that reads them (`DotNetwork`): a visible dot gives a sharp peak on itself, a
covered or absent one a flat map. Everything else is the real pipeline (crops, decoding,
Eq. 9, the shape repair, the re-crop pass, the adaptive compute), and the truth is where the
dots were drawn: a tracker that crops the wrong place, loses a face or swaps ids fails
against it.

Tolerances: a landmark is decoded from a 64 x 64 map of its crop, within one map pixel of its
dot (the DARK step is clipped to half a pixel about the argmax, and the dot is symmetric about
its centre): 2 crop pixels, i.e. 2 x crop side / 128 image pixels.
"""

import dataclasses
import itertools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from msm_jax.core import geometry, landmarks
from msm_jax.inference import pipeline, prediction, pretrained, smoothing, tracking
from tests import tiny_models

L = 68
FRAME_HW = (240, 320)
DOT_RADIUS = 2.5
# A flat 64 x 64 map holds (2r + 1)^2 / 64^2 = 0.002 of its mass in Eq. 9's window, a dot's
# map nearly all of it; a face half covered by an occluder about half. The thresholds sit in
# between: lost below a tenth of the dots' worth, refined below 0.7 (occluded faces only).
THRESHOLDS = tracking.TrackingThresholds(
  lost_below=0.1, refine_below=0.7, refine_below_detected=0.7
)


def _palette() -> np.ndarray:
  """68 colours with a channel at 1 and a spread of >= 0.4 between channels: none is a darker
  copy of another (a dot's anti-aliased rim, colour x coverage, never looks like another
  dot), none is grey like the occluder, and any two differ by >= 0.2 in a channel."""
  levels = np.linspace(0.0, 1.0, 6)
  colours = [
    colour
    for colour in itertools.product(levels, repeat=3)
    if max(colour) == 1.0 and max(colour) - min(colour) >= 0.4
  ]
  return np.array(colours[:L], np.float32)


COLOURS = _palette()


def grid_face() -> np.ndarray:
  """The face's 68 landmarks in the 128 canonical frame: a 9 x 8 grid (the last 4 left out),
  dots 10 and 13 pixels apart."""
  xs, ys = np.meshgrid(np.linspace(24, 104, 9), np.linspace(19, 109, 8))
  return np.stack([xs.ravel(), ys.ravel()], -1)[:L]


class DotNetwork(nn.Module):
  """The stand-in landmark network: logits -sharpness min(|pixel - colour_i|^2, 0.02), 2 x 2
  mean pooled to the maps (crop pixel 2m + 0.5 is map pixel m, as the hourglass's). Two
  palette colours are >= 0.2 apart (0.04 squared), so every pixel but dot i's own is at the
  floor: a covered dot's map is flat, not a peak on the dot of the nearest colour."""

  sharpness: float = 600.0

  @nn.compact
  def __call__(self, images, train=False):
    colours = self.param("colours", lambda *_: jnp.asarray(COLOURS))
    distance = jnp.sum((images[..., None, :] - colours) ** 2, axis=-1)
    logits = -self.sharpness * jnp.minimum(distance, 0.02)
    batch, side, _, points = logits.shape
    pooled = logits.reshape(batch, side // 2, 2, side // 2, 2, points).mean(axis=(2, 4))
    return pooled[None]


def dot_model() -> pretrained.PretrainedModel:
  config = tiny_models.tiny_config()
  config.inference.recrop_passes = 1
  config.inference.flip_test = False  # the colours are not mirror-symmetric
  config.hourglass.loss = "softmax_cross_entropy"
  rng = np.random.default_rng(0)
  dictionary = grid_face() + rng.normal(0, 1.0, (12, L, 2))
  variables = {
    "generator": {},
    "hourglass": {"params": {"colours": jnp.asarray(COLOURS)}},
    "dictionary": jnp.asarray(dictionary, jnp.float32),
    "thresholds": jnp.asarray(landmarks.region_thresholds(landmarks.get_scheme("300w"), 0.4, 0.6)),
  }
  trained = pipeline.TrainedModel(
    None, {"hourglass": DotNetwork()}, variables, frozenset({"hourglass", "dictionary"})
  )
  return pretrained.from_trained(trained, config)


def place(centre, scale: float = 1.0, roll_degrees: float = 0.0, jitter=None) -> np.ndarray:
  """The grid face centred at ``centre`` (image pixels), scaled and turned by ``roll``."""
  angle = math.radians(roll_degrees)
  turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  face = grid_face()
  points = ((face - face.mean(axis=0)) * scale) @ turn.T + np.asarray(centre, np.float64)
  return points if jitter is None else points + jitter


def render(faces, occluders=()) -> np.ndarray:
  """A black frame with each face's dots (anti-aliased discs, 4 x 4 samples per pixel) and
  grey occluders (x0, y0, x1, y1) over them."""
  height, width = FRAME_HW
  frame = np.zeros((height, width, 3), np.float32)
  samples = (np.arange(4) + 0.5) / 4 - 0.5
  reach = int(math.ceil(DOT_RADIUS)) + 1
  for points in faces:
    for colour, (x, y) in zip(COLOURS, points):
      columns = np.arange(max(0, int(x) - reach), min(width, int(x) + reach + 1))
      rows = np.arange(max(0, int(y) - reach), min(height, int(y) + reach + 1))
      dx = columns[None, :, None, None] + samples[None, None, None, :] - x
      dy = rows[:, None, None, None] + samples[None, None, :, None] - y
      cover = np.mean(dx**2 + dy**2 <= DOT_RADIUS**2, axis=(2, 3))
      patch = frame[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
      np.maximum(patch, cover[..., None] * colour, out=patch)
  for x0, y0, x1, y1 in occluders:
    frame[y0:y1, x0:x1] = 0.5
  return np.round(frame * 255).astype(np.uint8)


def dot_detector(frame: np.ndarray) -> np.ndarray:
  """The landmark boxes of the dot clusters of a frame, largest first (the occluder is grey,
  so it is not a face): a detector that knows nothing of the tracker."""
  colourful = (frame.max(axis=-1).astype(int) - frame.min(axis=-1)) > 100
  clusters, count = ndimage.label(ndimage.binary_dilation(colourful, iterations=8))
  boxes = []
  for index in range(1, count + 1):
    rows, columns = np.nonzero(colourful & (clusters == index))
    inset = DOT_RADIUS - 0.5
    boxes.append(
      [columns.min() + inset, rows.min() + inset, columns.max() - inset, rows.max() - inset]
    )
  boxes = np.array(boxes, np.float64).reshape(-1, 4)
  return boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]


class CountingDetector:
  """`dot_detector`, counting its calls."""

  def __init__(self):
    self.calls = 0

  def __call__(self, frame):
    self.calls += 1
    return dot_detector(frame)


def decoding_bound(points: np.ndarray, margin: float = 1.25) -> float:
  """One map pixel in image pixels for a face with landmarks ``points`` (module docstring)."""
  box = tracking.landmark_box(points)
  return 2 * margin * max(box[2] - box[0], box[3] - box[1]) / 128 * math.sqrt(2)


@pytest.fixture(scope="module")
def model():
  return dot_model()


def tracker_for(model, **options) -> tuple[tracking.Tracker, CountingDetector]:
  """A tracker on the dot faces; the network on every frame unless ``network_every`` says."""
  detector = CountingDetector()
  options = {"detect_every": 0, "network_every": 1, **options}
  tracker = tracking.Tracker(model, tracking.TrackerOptions(**options), THRESHOLDS, detector)
  return tracker, detector


def test_crop_from_landmarks_is_the_pipelines_recrop(model):
  mean_shape = np.mean(np.asarray(model.model.variables["dictionary"]), axis=0)
  options = model.options
  rng = np.random.default_rng(1)
  rolls = (-35.0, 0.0, 20.0, 170.0)
  faces = [
    place(rng.uniform(50, 250, 2), rng.uniform(0.5, 2.0), roll, rng.normal(0, 2, (L, 2)))
    for roll in rolls
  ]
  recrop = jax.jit(pipeline.landmark_crop_to_image, static_argnums=2)
  expected = recrop(
    jnp.asarray(np.array(faces), jnp.float32), model.model.variables["dictionary"], options
  )
  for points, roll, reference in zip(faces, rolls, np.asarray(expected)):
    pose = tracking.crop_from_landmarks(points, mean_shape, options.box_margin)
    # float32 in the reference, coordinates up to ~400 px.
    np.testing.assert_allclose(
      tracking.crop_to_image(pose, options.crop_size), reference, rtol=1e-4, atol=1e-3
    )
    assert math.degrees(pose.roll) == pytest.approx(-roll, abs=5.0)  # turning it back upright


def test_predicted_pose_moves_at_constant_velocity():
  earlier = (0.0, tracking.CropPose(np.array([10.0, 20.0]), 100.0, math.radians(170)))
  last = (0.1, tracking.CropPose(np.array([13.0, 18.0]), 110.0, math.radians(-170)))
  pose = tracking.predicted_pose(earlier, last, 0.3)  # two steps of 0.1 s ahead
  np.testing.assert_allclose(pose.centre, [19.0, 14.0])
  assert pose.side == pytest.approx(110.0 * 1.1**2)  # a zoom is a factor per step
  assert math.degrees(pose.roll) == pytest.approx(-170 + 2 * 20)  # through +-180, not back


def _moving_clip(frames: int = 24):
  """Pan 72 px right, zoom 1 -> 1.2 -> 0.85, roll 0 -> 25 -> -25 degrees."""
  clip = []
  for index in range(frames):
    phase = index / (frames - 1)
    scale = 1.0 + 0.2 * math.sin(math.pi * phase) - 0.15 * phase
    roll = 25.0 * math.sin(2 * math.pi * phase)
    truth = place((124.0 + 72.0 * phase, 120.0), scale, roll)
    clip.append((render([truth]), [truth]))
  return clip


def test_a_moving_face_is_followed_from_one_detection(model):
  tracker, detector = tracker_for(model, smoothing=None)
  for index, (frame, [truth]) in enumerate(_moving_clip()):
    [face] = tracker.update(frame)
    assert face.track_id == 0 and face.detected == (index == 0)
    error = np.linalg.norm(face.raw_landmarks - truth, axis=-1)
    assert error.max() <= decoding_bound(truth), (index, error.max())
    assert face.reliable.all() and not face.refined
    np.testing.assert_array_equal(face.landmarks, face.raw_landmarks)  # smoothing off
  assert detector.calls == 1 and tracker.statistics.lost == 0


def test_a_fast_face_is_cropped_where_it_moves_to(model):
  # 20 px a frame, more than the 13 px between the face's edge and its crop's: a crop where
  # the face was would cut off its leading dots; the velocity puts it where the face is.
  tracker, detector = tracker_for(model, smoothing=None)
  for index in range(10):
    truth = place((60.0 + 20.0 * index, 120.0), 0.8)
    [face] = tracker.update(render([truth]))
    assert np.abs(face.raw_landmarks - truth).max() <= decoding_bound(truth), index
    if index >= 2:  # two frames make a velocity
      assert face.reliable.all() and not face.refined, index
  assert detector.calls == 1


def test_between_network_frames_the_landmarks_move_with_the_image(model):
  tracker, detector = tracker_for(model, smoothing=None, network_every=2)
  previous = last = None
  for index, (frame, [truth]) in enumerate(_moving_clip()):
    [face] = tracker.update(frame)
    assert face.track_id == 0 and face.measured == (index % 2 == 0), index
    if face.measured:
      bound = decoding_bound(truth)
    else:
      # Carried: the last frame's landmarks (within its decoding bound; the clip zooms by
      # < 3 % a frame) moved by the image's motion, which the dots give to ~0.1 px.
      bound = 1.03 * decoding_bound(previous) + 0.25
      np.testing.assert_array_equal(face.reliable, last.reliable)
    error = np.linalg.norm(face.raw_landmarks - truth, axis=-1)
    assert error.max() <= bound, (index, error.max())
    previous, last = truth, face
  assert detector.calls == 1 and tracker.statistics.carried == len(_moving_clip()) // 2


def test_a_cut_between_network_frames_is_seen_by_the_flow(model):
  # Frame 3 is due to be carried: the flow of the first face's dots finds black where they
  # were, so the network runs there, loses the face, and the detector finds the new one.
  here, there = place((90.0, 110.0)), place((240.0, 130.0), 0.9, 10.0)
  tracker, detector = tracker_for(model, smoothing=None, network_every=2)
  faces = [tracker.update(render([truth])) for truth in (here, here, here, there, there)]
  assert [[face.track_id for face in frame] for frame in faces] == [[0]] * 3 + [[1]] * 2
  assert [frame[0].measured for frame in faces] == [True, False, True, True, False]
  assert faces[3][0].detected and detector.calls == 2
  assert np.abs(faces[4][0].raw_landmarks - there).max() <= decoding_bound(there) + 0.25


def test_a_cut_is_found_again_in_the_same_frame_and_ids_come_back(model):
  here, there = place((90.0, 110.0)), place((240.0, 130.0), 0.9, 10.0)
  scenes = [[here]] * 4 + [[there]] * 3 + [[]] * 3 + [[here]] * 3
  tracker, detector = tracker_for(model)
  ids, calls = [], []
  for index, truths in enumerate(scenes):
    faces = tracker.update(render(truths))
    calls.append(detector.calls)
    assert len(faces) == len(truths), index
    for face, truth in zip(faces, truths):
      assert np.abs(face.raw_landmarks - truth).max() <= decoding_bound(truth), index
      # Found again by the detector: the smoothing starts over, no lag from the old place.
      if face.detected:  # (to float32 rounding: the filter's frame there and back)
        np.testing.assert_allclose(face.landmarks, face.raw_landmarks, rtol=1e-6, atol=1e-4)
    ids.append([face.track_id for face in faces])
  # The other photo's face is a new face; the first one, back where it was lost, its own id.
  assert ids == [[0]] * 4 + [[1]] * 3 + [[]] * 3 + [[0]] * 3
  # The detector ran on the first frame, on the cut, on each empty frame and on the return.
  assert np.diff([0] + calls).tolist() == [1, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0]


def test_two_faces_keep_their_ids_through_an_occluder(model):
  tracker, detector = tracker_for(model, detect_every=5)
  frames = 14
  ids, covered_counts, refined = [], [], []
  for index in range(frames):
    left = place((80.0 + 2 * index, 110.0), 0.9)
    right = place((245.0 - 2 * index, 130.0), 0.8, -15.0)
    # A bar 36 px wide sweeps across the left face (from clear of it), covering up to 4 of
    # its 9 dot columns.
    bar_x = 10 * index - 30
    occluder = (max(bar_x, 0), 0, bar_x + 36, FRAME_HW[0])
    # Dots wholly under the bar, and dots wholly clear of it (the rest are cut by its edge).
    covered = (left[:, 0] > bar_x + DOT_RADIUS) & (left[:, 0] < bar_x + 36 - DOT_RADIUS)
    clear = (left[:, 0] < bar_x - DOT_RADIUS) | (left[:, 0] > bar_x + 36 + DOT_RADIUS)
    faces = tracker.update(render([left, right], [occluder]), time=index / 25)
    assert len(faces) == 2, index
    # Which face is which: the one nearer each truth.
    faces = sorted(faces, key=lambda face: face.raw_landmarks[:, 0].mean())
    ids.append([face.track_id for face in faces])
    for face, truth, visible in ((faces[0], left, clear), (faces[1], right, np.ones(L, bool))):
      assert np.abs(face.raw_landmarks - truth)[visible].max() <= decoding_bound(truth), index
    # The covered dots' maps are flat: flagged (and rebuilt by the shape repair).
    assert not faces[0].reliable[covered].any(), index
    covered_counts.append(int(covered.sum()))
    refined.append(faces[0].refined)
  assert len({tuple(pair) for pair in ids}) == 1 and ids[0][0] != ids[0][1]
  assert max(covered_counts) >= 0.4 * L  # the bar really covered the face
  # The first pass is unsure where much of the face is covered, sure where none of it is.
  for count, was_refined in zip(covered_counts, refined):
    if count >= 0.4 * L:
      assert was_refined
    if count == 0:
      assert not was_refined
  assert tracker.statistics.lost == 0
  # The interval's runs, and those where the bar hid most of the face's dots between two
  # frames (the flow then finds no motion: `Tracker._follow`).
  interval_runs = 1 + (frames - 1) // 5
  assert interval_runs <= detector.calls <= interval_runs + tracker.statistics.unfollowed


def test_a_still_face_is_smoothed_towards_the_truth(model):
  rng = np.random.default_rng(7)
  truth = place((160.0, 120.0))
  tracker, _ = tracker_for(model)
  raw, smoothed = [], []
  for _ in range(30):
    # Each frame draws the dots a little off (sd 0.4 px): the landmarks jitter, the face is
    # still.
    [face] = tracker.update(render([truth + rng.normal(0, 0.4, (L, 2))]))
    raw.append(face.raw_landmarks)
    smoothed.append(face.landmarks)
  raw, smoothed = np.array(raw[5:]), np.array(smoothed[5:])  # past the filter's start

  def jitter(points):
    return np.sqrt(np.mean(np.sum(np.diff(points, axis=0) ** 2, axis=-1)))

  def error(points):
    return np.sqrt(np.mean(np.sum((points - truth) ** 2, axis=-1)))

  # The target (docs/video.md): at most half the frame-to-frame motion; and averaging a
  # still face's noisy samples brings them nearer the truth, never further.
  assert jitter(smoothed) <= 0.5 * jitter(raw)
  assert error(smoothed) <= error(raw)


def test_a_moving_face_is_smoothed_without_lag(model):
  # 12 px a frame, each frame's dots 0.4 px off: a filter on the image coordinates would
  # trail the face (the One Euro's lag at this speed is ~1 px); the face-fixed one does not.
  rng = np.random.default_rng(8)
  tracker, _ = tracker_for(model)
  raw, smoothed, truths = [], [], []
  for index in range(16):
    truth = place((60.0 + 12.0 * index, 120.0 + 2.0 * index), 0.9, 1.5 * index)
    [face] = tracker.update(render([truth + rng.normal(0, 0.4, (L, 2))]))
    raw.append(face.raw_landmarks)
    smoothed.append(face.landmarks)
    truths.append(truth)
  raw, smoothed, truths = (np.array(points[4:]) for points in (raw, smoothed, truths))
  lag = np.mean(smoothed - truths, axis=(0, 1))  # the mean offset along the motion
  assert np.abs(lag).max() <= np.abs(np.mean(raw - truths, axis=(0, 1))).max() + 0.1
  error = lambda points: np.sqrt(np.mean(np.sum((points - truths) ** 2, axis=-1)))
  assert error(smoothed) <= error(raw)


def test_frames_never_compile(model):
  tracker, _ = tracker_for(model, detect_every=3)
  tracker.warm_up()
  compiled = []

  def listener(event, duration, **kwargs):
    if event.startswith("/jax/core/compile/"):
      compiled.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    here, there = place((90.0, 110.0)), place((240.0, 130.0), 0.8)
    bar = (70, 0, 110, FRAME_HW[0])
    # Detection, tracking, a refined occluded face, two faces, a cut, empty frames, a return.
    for truths, occluders in (
      ([here], ()),
      ([here], ()),
      ([here], [bar]),
      ([here, there], ()),
      ([here, there], ()),
      ([there], ()),
      ([], ()),
      ([here], ()),
    ):
      tracker.update(render(truths, occluders))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert tracker.statistics.refined >= 1 and tracker.statistics.lost >= 1
  assert compiled == []


def test_adaptive_compute_is_the_first_pass_or_the_pipeline_it_stands_for(model):
  """Photos through compute="adaptive" against `make_inference_fn`: a sure face gets the
  one-pass pipeline, an unsure one the whole pipeline (here a pass and a re-crop pass)."""
  clean, covered = place((100.0, 110.0), 0.9, 12.0), place((200.0, 120.0), 1.0, -8.0)
  images = [render([clean]), render([covered], [(150, 0, 200, FRAME_HW[0])])]
  boxes = [tracking.landmark_box(points)[None] for points in (clean, covered)]
  one_pass = dataclasses.replace(model, options=dataclasses.replace(model.options, recrop_passes=0))
  references = {
    "one pass": prediction.predict_images(one_pass, images, boxes=boxes, batch_size=1),
    "pipeline": prediction.predict_images(model, images, boxes=boxes, batch_size=1),
  }
  for refine_below, expected in (
    (-math.inf, ("one pass", "one pass")),
    (THRESHOLDS.refine_below_detected, ("one pass", "pipeline")),  # the covered face is unsure
    (math.inf, ("pipeline", "pipeline")),
  ):
    results = prediction.predict_images(
      model, images, boxes=boxes, batch_size=1, compute="adaptive", refine_below=refine_below
    )
    for index, (result, name) in enumerate(zip(results, expected)):
      [face], [reference] = result.faces, references[name][index].faces
      np.testing.assert_array_equal(face.reliable, reference.reliable)
      # One float32 computation in two compiled programs.
      np.testing.assert_allclose(face.landmarks, reference.landmarks, rtol=1e-5, atol=1e-3)
  # The two references differ, so each comparison above tells them apart.
  [first], [second] = (references[name][1].faces for name in references)
  assert np.abs(first.landmarks - second.landmarks).max() > 0.05


def test_a_saved_trace_is_read_back_instead_of_tracing(model, tmp_path):
  truth = place((150.0, 120.0), 0.9, 10.0)
  pose = tracking.crop_from_landmarks(truth, np.asarray(grid_face()), model.options.box_margin)
  window, crop, window_to_image = prediction.crop_window(
    render([truth]), tracking.crop_to_image(pose, 128), model.options.crop_size
  )
  windows = np.zeros((1, 512, 512, 3), np.uint8)
  windows[0, : window.shape[0], : window.shape[1]] = window
  arguments = (
    model.model.variables,
    windows,
    crop[None].astype(np.float32),
    np.float32(math.inf),
    np.float32(-math.inf),
  )
  function = prediction.adaptive_inference(model)
  expected = function(*arguments)
  pipeline.with_saved_trace(function, arguments, "dots", str(tmp_path))
  [saved] = os.listdir(tmp_path / "msm-jax-traces")

  def not_to_be_traced(*arguments):
    raise AssertionError("traced again")

  # Read back: the function given is never traced (it would fail), the file's program runs.
  loaded = pipeline.with_saved_trace(jax.jit(not_to_be_traced), arguments, "dots", str(tmp_path))
  out = loaded(*arguments)
  for name in ("landmarks", "scores", "reliable", "refined", "first_confidence"):
    np.testing.assert_array_equal(np.asarray(out[name]), np.asarray(expected[name]))
  in_window = geometry.apply_affine(truth, np.linalg.inv(window_to_image))  # (no downscale)
  assert np.abs(np.asarray(out["landmarks"])[0] - in_window).max() <= decoding_bound(truth)
  # Another key is another file; a damaged file is traced again and replaced.
  pipeline.with_saved_trace(function, arguments, "other", str(tmp_path))
  assert len(os.listdir(tmp_path / "msm-jax-traces")) == 2
  (tmp_path / "msm-jax-traces" / saved).write_bytes(b"damaged")
  pipeline.with_saved_trace(function, arguments, "dots", str(tmp_path))
  assert (tmp_path / "msm-jax-traces" / saved).read_bytes() != b"damaged"
  assert pipeline.with_saved_trace(function, arguments, "dots", None) is function


def test_thresholds_round_trip_and_refuse_bad_files(tmp_path):
  path = tmp_path / "thresholds.json"
  path.write_text('{"lost_below": 0.1, "refine_below": 0.5, "refine_below_detected": 0.6}')
  loaded = tracking.TrackingThresholds.load(str(path))
  assert loaded == tracking.TrackingThresholds(0.1, 0.5, 0.6)
  assert tracking.TrackingThresholds.from_dict(loaded.to_dict()) == loaded
  path.write_text('{"lost_below": 0.1}')
  with pytest.raises(ValueError, match="thresholds.json: want numbers"):
    tracking.TrackingThresholds.load(str(path))
  with pytest.raises(ValueError, match="missing.json: cannot read"):
    tracking.TrackingThresholds.load(str(tmp_path / "missing.json"))


def test_a_tracker_takes_the_packages_thresholds_or_refines_everything_with_a_warning(model):
  fitted = tracking.TrackingThresholds(0.2, 0.3, 0.4, {"data": "clips"})
  with_fit = dataclasses.replace(model, tracking_thresholds=fitted)
  assert tracking.Tracker(with_fit, detect=dot_detector).thresholds == fitted
  given = tracking.TrackingThresholds(0.0, 0.0, 0.0)
  assert tracking.Tracker(with_fit, thresholds=given, detect=dot_detector).thresholds == given
  unfitted = dataclasses.replace(model, tracking_thresholds=None)
  with pytest.warns(UserWarning, match="no tracking thresholds.*msm_jax.eval.tracking_fit"):
    tracker = tracking.Tracker(unfitted, detect=dot_detector)
  assert tracker.thresholds == tracking.UNFITTED
  assert tracker.thresholds.refine_below == tracker.thresholds.refine_below_detected == math.inf


def test_bad_options_and_frames_are_refused(model):
  with pytest.raises(ValueError, match="detect_every must be >= 0"):
    tracking.TrackerOptions(detect_every=-1)
  with pytest.raises(ValueError, match="network_every must be >= 1"):
    tracking.TrackerOptions(network_every=0)
  with pytest.raises(ValueError, match="compute must be"):
    tracking.TrackerOptions(compute="some")
  with pytest.raises(ValueError, match="beta must be"):
    smoothing.OneEuroParameters(beta=-1.0)
  tracker, _ = tracker_for(model)
  with pytest.raises(ValueError, match="uint8 RGB frame"):
    tracker.update(np.zeros((10, 10), np.uint8))


def test_frame_json_lines_hold_every_field():
  face = tracking.TrackedFace(
    track_id=3,
    box=np.array([1.0, 2.0, 3.0, 4.0], np.float32),
    landmarks=np.full((L, 2), 1.23456, np.float32),
    raw_landmarks=np.zeros((L, 2), np.float32),
    scores=np.full(L, 0.98765, np.float32),
    reliable=np.ones(L, bool),
    confidence=0.912345,
    detected=True,
    refined=False,
  )
  line = tracking.frame_to_json(5, 0.2, [face])
  assert line["frame"] == 5 and line["time"] == 0.2
  [entry] = line["faces"]
  assert entry["id"] == 3 and entry["box"] == [1.0, 2.0, 3.0, 4.0]
  assert entry["landmarks"][0] == [1.23, 1.23] and len(entry["landmarks"]) == L
  assert entry["measured"] is True and entry["detected"] is True
  assert entry["scores"][0] == 0.988 and entry["reliable"][0] is True
  assert entry["confidence"] == 0.9123 and entry["detected"] is True and entry["refined"] is False

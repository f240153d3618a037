"""Video clips with ground truth (`msm_jax.data.clips`): each frame's truth is where the photo's
landmarks are drawn, the occluder flags the landmarks it hides, the cut shows the other face."""

import math

import numpy as np
from PIL import Image

from msm_jax.data import clips
from msm_jax.data.records import FaceRecord

PHOTO_HW = (240, 240)
# Landmarks on whole pixels; each is drawn as a white 5 x 5 square centred on it.
POINTS = np.array([[70.0, 80.0], [170.0, 80.0], [120.0, 130.0], [90.0, 175.0], [150.0, 175.0]])


def _photo(path, points) -> str:
  image = np.zeros(PHOTO_HW + (3,), np.uint8)
  for x, y in points.astype(int):
    image[y - 2 : y + 3, x - 2 : x + 3] = 255
  Image.fromarray(image).save(path)
  return str(path)


def _spec(tmp_path, length: int = 4) -> clips.ClipSpec:
  first = _photo(tmp_path / "first.png", POINTS)
  other = POINTS * 0.8 + 20.0
  cut = _photo(tmp_path / "cut.png", np.round(other))
  return clips.ClipSpec(first, POINTS, (), cut, np.round(other), (), seed=0, segment_length=length)


def _drawn_at(image, point, radius: int = 12) -> np.ndarray:
  """The brightness-weighted centre of the bright pixels around ``point``."""
  x0, y0 = (int(round(value)) - radius for value in point)
  window = image[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1].astype(float).mean(axis=-1)
  weights = np.where(window > 100, window, 0.0)
  rows, columns = np.mgrid[: window.shape[0], : window.shape[1]]
  centre = np.array([(weights * columns).sum(), (weights * rows).sum()]) / weights.sum()
  return centre + [x0, y0]


def test_every_frames_truth_is_where_the_landmarks_are_drawn(tmp_path):
  frames = list(clips.clip_frames(_spec(tmp_path)))
  assert len(frames) == 4 * len(clips.SEGMENTS)
  still = frames[0]
  box = np.concatenate([still.truth.min(axis=0), still.truth.max(axis=0)])
  # The still face: its landmark box's longer side FACE_SIZE (photo: 100 x 95), centred.
  np.testing.assert_allclose(box[2:] - box[:2], [clips.FACE_SIZE, 0.95 * clips.FACE_SIZE])
  np.testing.assert_allclose((box[:2] + box[2:]) / 2, np.array(clips.FRAME_SIZE) / 2, atol=1e-9)
  moving = [f for f in frames if f.segment in ("pan", "zoom", "roll") and f.truth is not None]
  for frame in [still] + moving:
    assert frame.image.shape == (clips.FRAME_SIZE[1], clips.FRAME_SIZE[0], 3)
    for point in frame.truth:
      # A square of 5 photo pixels is 8 frame pixels wide: its centre to a fraction of one.
      np.testing.assert_allclose(_drawn_at(frame.image, point), point, atol=0.35)
  rolled = [f for f in frames if f.segment == "roll"][1]  # a quarter of the way: +30 degrees
  across = rolled.truth[1] - rolled.truth[0]  # the two top landmarks, level in the photo
  assert math.isclose(math.degrees(math.atan2(across[1], across[0])), 30.0, abs_tol=1e-9)


def test_the_occluder_hides_the_flagged_landmarks_and_only_those(tmp_path):
  frames = [f for f in clips.clip_frames(_spec(tmp_path, length=8)) if f.segment == "occluder"]
  assert all(f.occluded is not None and f.occluded.shape == (len(POINTS),) for f in frames)
  assert any(f.occluded.any() for f in frames) and any(not f.occluded.all() for f in frames)
  for frame in frames:
    for point, hidden in zip(frame.truth, frame.occluded):
      x, y = (int(round(value)) for value in point)
      # The band's texture is the photo's black corner: the pixel of a hidden landmark is dark,
      # that of a visible one the middle of its white square.
      brightness = frame.image[y, x].mean()
      assert (brightness < 40) == hidden and (hidden or brightness > 200), (point, brightness)


def test_cuts_show_the_other_face_and_the_blank_frames_none(tmp_path):
  spec = _spec(tmp_path)
  frames = list(clips.clip_frames(spec))
  cut = [f for f in frames if f.segment == "cut"]
  box = np.concatenate([cut[0].truth.min(axis=0), cut[0].truth.max(axis=0)])
  centre = np.array(clips.FRAME_SIZE) / 2 + clips.CUT_OFFSET
  np.testing.assert_allclose((box[:2] + box[2:]) / 2, centre, atol=1e-9)
  for point in cut[0].truth:
    np.testing.assert_allclose(_drawn_at(cut[0].image, point), point, atol=0.35)
  blank = [f for f in frames if f.segment == "no face"]
  assert blank and all(f.truth is None and f.image.max() < 60 for f in blank)
  scenes = [f.scene for f in frames]
  assert scenes == sorted(scenes) and len(set(scenes)) == 5  # a new scene at each cut and blank
  again = list(clips.clip_frames(spec))  # the same clip every time
  assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, again))


def test_clip_specs_cut_to_the_next_photo_and_keep_the_photos_other_faces(tmp_path):
  first = _photo(tmp_path / "a.png", POINTS)
  second = _photo(tmp_path / "b.png", POINTS)
  box = np.array([60.0, 70.0, 180.0, 185.0])
  records = [
    FaceRecord(first, POINTS, box, "test"),
    FaceRecord(first, POINTS + 5.0, box, "test"),
    FaceRecord(second, POINTS - 5.0, box, "test"),
  ]
  [spec_a, spec_b] = clips.clip_specs(records, 2, seed=7)
  assert spec_a.path == first and spec_a.cut_path == second
  np.testing.assert_array_equal(spec_a.cut_truth, POINTS - 5.0)
  [other] = spec_a.others
  np.testing.assert_array_equal(other, POINTS + 5.0)
  assert spec_b.cut_path == second and (spec_a.seed, spec_b.seed) == (7, 8)

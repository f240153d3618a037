"""Tests of the synthetic face data set (msm_jax/data/synthetic.py, synthetic_shapes.py)."""

import hashlib

import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageDraw

from msm_jax.data import synthetic
from msm_jax.data import synthetic_shapes as shapes

# Horizontal flip permutations, written by hand from the layouts: flipped[i] = original[FLIP[i]].
FLIP_68 = (
  list(range(16, -1, -1))
  + list(range(26, 16, -1))
  + [27, 28, 29, 30]
  + [35, 34, 33, 32, 31]
  + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
  + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
  + [64, 63, 62, 61, 60, 67, 66, 65]
)
FLIP_98 = (
  list(range(32, -1, -1))
  + [46, 45, 44, 43, 42, 50, 49, 48, 47]
  + [37, 36, 35, 34, 33, 41, 40, 39, 38]
  + [51, 52, 53, 54]
  + [59, 58, 57, 56, 55]
  + [72, 71, 70, 69, 68, 75, 74, 73]
  + [64, 63, 62, 61, 60, 67, 66, 65]
  + [82, 81, 80, 79, 78, 77, 76, 87, 86, 85, 84, 83]
  + [92, 91, 90, 89, 88, 95, 94, 93]
  + [97, 96]
)
FLIP_29 = [
  1,
  0,
  3,
  2,
  6,
  7,
  4,
  5,
  9,
  8,
  11,
  10,
  14,
  15,
  12,
  13,
  17,
  16,
  19,
  18,
  20,
  21,
  23,
  22,
  24,
  25,
  26,
  27,
  28,
]

# No clutter, blur, noise, lighting gradient or occluders: skin is one flat colour.
CLEAN = dict(
  background_clutter=0,
  blur_prob=0.0,
  max_noise_std=0.0,
  illumination_strength=0.0,
  occlusion_prob=0.0,
)
FRONTAL = dict(CLEAN, image_size=256, max_yaw_deg=0.0, max_pitch_deg=0.0)


def pixel(image, point):
  return image[int(round(point[1])), int(round(point[0]))].astype(np.float64)


def distance(a, b):
  return float(np.sqrt(((a - b) ** 2).sum()))


def luminance(colour):
  return float(np.dot(colour, [0.299, 0.587, 0.114]))


def unit(v):
  return v / np.linalg.norm(v)


# ------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_and_different_seeds_differ():
  first, again = synthetic.render_faces(7, 3), synthetic.render_faces(7, 3)
  for key in ("images", "landmarks", "occluded", "boxes"):
    assert first[key].tobytes() == again[key].tobytes(), key
  other = synthetic.render_faces(8, 3)
  assert not np.array_equal(first["images"], other["images"])
  assert np.abs(first["landmarks"] - other["landmarks"]).max() > 1.0


def test_render_face_equals_kth_face_of_render_faces():
  batch = synthetic.render_faces(3, 3, start=2)
  assert batch["images"].shape == (3, 128, 128, 3) and batch["images"].dtype == np.uint8
  assert batch["landmarks"].dtype == np.float32 and batch["boxes"].shape == (3, 4)
  for k in range(3):
    face = synthetic.render_face(3, 2 + k)
    for single, stacked in (
      ("image", "images"),
      ("landmarks", "landmarks"),
      ("occluded", "occluded"),
      ("box", "boxes"),
    ):
      np.testing.assert_array_equal(face[single], batch[stacked][k])
  # The box is the tight box of the landmarks.
  lm = batch["landmarks"][0]
  np.testing.assert_array_equal(batch["boxes"][0], [*lm.min(0), *lm.max(0)])


def test_default_data_set_is_golden():
  # The data set must be the same on every machine. Landmarks use only +, -, *, /, sqrt and
  # scalar math, so they cannot drift. Images also depend on Pillow's rasteriser, so a Pillow
  # upgrade may change them. Update these digests only on a deliberate change of the data.
  faces = synthetic.render_faces(0, 3)
  digest = lambda array: hashlib.sha256(array.tobytes()).hexdigest()[:16]
  assert digest(faces["landmarks"]) == "ec1645f7b32bec59"
  assert digest(faces["images"]) == "58367869d3cd7a09", "images changed (Pillow version?)"


def test_occlusion_settings_do_not_change_the_face():
  clean = synthetic.render_face(4, 1, dict(occlusion_prob=0.0))
  occluded = synthetic.render_face(4, 1, dict(occlusion_prob=1.0))
  np.testing.assert_array_equal(clean["landmarks"], occluded["landmarks"])
  assert not clean["occluded"].any()


# ---------------------------------------------------------------------------------- geometry


def test_landmarks_inside_image_for_default_ranges():
  for num in (68, 98):
    faces = synthetic.render_faces(11, 40, dict(num_landmarks=num, image_size=96))
    assert faces["landmarks"].min() >= 0 and faces["landmarks"].max() <= 95


def test_neutral_mean_shape_is_mirror_symmetric():
  mean = shapes.mean_shape()
  mirrored = mean[FLIP_68] * [-1, 1]
  np.testing.assert_array_equal(mirrored, mean)
  # and it is a plausible face: eyes above nose above mouth above chin, outer corners apart
  assert mean[36, 1] < mean[30, 1] < mean[62, 1] < mean[8, 1]
  assert mean[36, 0] < mean[39, 0] < 0 < mean[42, 0] < mean[45, 0]


def test_yaw_moves_far_jaw_inwards_and_widens_near_side():
  shape = shapes.face_shape({})
  pose = lambda yaw: shapes.Pose(
    yaw=np.radians(yaw), pitch=0.0, roll=0.0, pixels_per_unit=10.0, centre=(0.0, 0.0)
  )
  front, turned = shapes.pose_landmarks(shape, pose(0)), shapes.pose_landmarks(shape, pose(25))
  # Positive yaw shifts the features to the image right: the right side is the far side.
  near = lambda lm: lm[30, 0] - lm[0, 0]
  far = lambda lm: lm[16, 0] - lm[30, 0]
  assert near(turned) > 1.3 * near(front) and far(turned) < 0.7 * far(front)
  # The squash is monotonic: the far eye stays inside the jaw line, the eye keeps its order.
  assert turned[45, 0] < turned[16, 0] and turned[42, 0] < turned[45, 0]
  np.testing.assert_allclose(turned[:, 1], front[:, 1])


def test_spline_hits_control_points_and_reproduces_lines():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(7, 2))
  params = shapes.dense_params(7, 4, closed=False)
  curve = shapes.spline(points, params, closed=False)
  np.testing.assert_array_equal(curve[::4], points)
  line = np.stack([np.arange(5.0) * 3 + 1, np.arange(5.0) * -2], axis=1)
  t = np.linspace(0, 4, 17)
  np.testing.assert_allclose(
    shapes.spline(line, tuple(t), closed=False), np.stack([3 * t + 1, -2 * t], axis=1), atol=1e-12
  )


def test_filled_shapes_have_their_true_area_after_antialiasing():
  # PIL fills too much; _inset corrects it. The mean boundary offset of filled ellipses
  # (coverage minus polygon area, over the perimeter) must be well below 0.1 pixel.
  offsets = []
  for k in range(30):
    rng = np.random.default_rng(k)
    centre, radii = 20 + 10 * rng.random(2), 2 + 8 * rng.random(2)
    poly = synthetic._ellipse(centre * 2 + 0.5, 2 * radii[0], 2 * radii[1], rng.random() * 3)
    canvas = Image.new("L", (100, 100))
    ImageDraw.Draw(canvas).polygon(synthetic._points(synthetic._inset(poly)), fill=255)
    coverage = np.asarray(canvas.reduce(2), np.float64).sum() / 255
    x, y = (poly[:, 0] - 0.5) / 2, (poly[:, 1] - 0.5) / 2
    area = 0.5 * abs((x * np.roll(y, -1) - np.roll(x, -1) * y).sum())
    perimeter = np.hypot(x - np.roll(x, -1), y - np.roll(y, -1)).sum()
    offsets.append((coverage - area) / perimeter)
  assert abs(np.mean(offsets)) < 0.03 and np.std(offsets) < 0.08


# ---------------------------------------------------------- landmarks sit on drawn structure


def test_lip_eye_and_jaw_landmarks_sit_on_their_drawn_edges():
  for index in range(5):
    face = synthetic.render_face(21, index, FRONTAL)
    image, lm = face["image"], face["landmarks"].astype(np.float64)
    skin = pixel(image, (lm[33] + lm[51]) / 2)  # the philtrum
    lip = pixel(image, (lm[51] + lm[62]) / 2)  # middle of the upper lip
    assert distance(lip, skin) > 25
    mouth_centre = lm[60:68].mean(0)
    for i in [49, 50, 51, 52, 53, 55, 56, 57, 58, 59]:
      inward = unit(mouth_centre - lm[i])
      inside, outside = pixel(image, lm[i] + 2 * inward), pixel(image, lm[i] - 2 * inward)
      assert distance(inside, lip) < distance(inside, skin), (index, i)
      assert distance(outside, skin) < distance(outside, lip), (index, i)
    # Eye corners lie on the dark lash line; the sclera next to them is bright.
    for side, (outer, inner) in enumerate(((36, 39), (45, 42))):
      centre = lm[36 + 6 * side : 42 + 6 * side].mean(0)
      for corner in (outer, inner):
        y, x = int(round(lm[corner, 1])), int(round(lm[corner, 0]))
        darkest = min(luminance(c) for c in image[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3))
        sclera = luminance(pixel(image, 0.6 * lm[corner] + 0.4 * centre))
        assert darkest < 0.5 * luminance(skin) and darkest < 0.6 * sclera, (index, corner)
    # Jaw points are on the skin outline: flat skin 2.5 px inside, something else outside.
    for i in range(17):
      inward = unit(lm[30] - lm[i])
      assert distance(pixel(image, lm[i] + 2.5 * inward), skin) < 4, (index, i)
      assert distance(pixel(image, lm[i] - 2.5 * inward), skin) > 6, (index, i)


def test_open_mouth_shows_dark_cavity_and_closed_mouth_has_touching_lips():
  open_config = dict(FRONTAL, mouth_open_prob=1.0)
  checked = 0
  for index in range(6):
    face = synthetic.render_face(5, index, open_config)
    image, lm = face["image"], face["landmarks"]
    if lm[66, 1] - lm[62, 1] < 4:
      continue
    checked += 1
    skin = pixel(image, (lm[33] + lm[51]) / 2)
    assert luminance(pixel(image, (lm[62] + lm[66]) / 2)) < 0.5 * luminance(skin)
  assert checked >= 3
  closed = synthetic.render_faces(5, 4, dict(mouth_open_prob=0.0))["landmarks"]
  np.testing.assert_array_equal(closed[:, [61, 62, 63]], closed[:, [67, 66, 65]])


def test_wflw_lower_brow_points_sit_on_the_lower_brow_edge():
  for index in range(4):
    face = synthetic.render_face(2, index, dict(FRONTAL, num_landmarks=98))
    image, lm = face["image"], face["landmarks"].astype(np.float64)
    skin = pixel(image, (lm[57] + lm[79]) / 2)
    brow = pixel(image, (lm[35] + lm[40]) / 2)
    assert distance(brow, skin) > 25
    # 38 / 50 are corners of the blunt inner ends; the others have brow right above them.
    for lower, upper in [(39, 36), (40, 35), (41, 34), (47, 45), (48, 44), (49, 43)]:
      up = unit(lm[upper] - lm[lower])
      inside, below = pixel(image, lm[lower] + 1.5 * up), pixel(image, lm[lower] - 2 * up)
      assert distance(inside, brow) < distance(inside, skin), (index, lower)
      assert distance(below, skin) < distance(below, brow), (index, lower)


# --------------------------------------------------------------------------------- occlusion


def test_occlusion_flags_agree_with_the_occluder_mask():
  config = dict(CLEAN, occlusion_prob=1.0, max_occluders=3)
  flagged = visible = 0
  for index in range(8):
    face = synthetic.render_face(9, index, config, return_occluder_mask=True)
    mask, lm = face["occluder_mask"], face["landmarks"]
    cells = np.rint(lm).astype(int)
    np.testing.assert_array_equal(face["occluded"], mask[cells[:, 1], cells[:, 0]] >= 0.5)
    flagged, visible = flagged + face["occluded"].sum(), visible + (~face["occluded"]).sum()
    # The mask is the occluders' real footprint: elsewhere the image equals the clean render.
    clean = synthetic.render_face(9, index, CLEAN)["image"]
    np.testing.assert_array_equal(face["image"][mask == 0], clean[mask == 0])
    covered = mask == 1
    assert covered.sum() > 50
    changed = np.abs(face["image"].astype(int) - clean).max(-1) > 0
    assert changed[covered].mean() > 0.8
  assert flagged > 20 and visible > 20


# --------------------------------------------------------------------------- 98 / 29 layouts


def random_face(seed=0):
  return synthetic.render_face(seed, 3, dict(max_yaw_deg=25))["landmarks"].astype(np.float64)


def test_wflw_and_cofw_keep_shared_points_exactly():
  lm = random_face()
  wflw, cofw = shapes.map_68_to_98(lm), shapes.map_68_to_29(lm)
  assert wflw.shape == (98, 2) and cofw.shape == (29, 2)
  shared_98 = {60: 36, 72: 45, 64: 39, 68: 42} | {2 * k: k for k in range(17)}
  shared_98 |= {33 + k: 17 + k for k in range(5)} | {42 + k: 22 + k for k in range(5)}
  shared_98 |= {51 + k: 27 + k for k in range(9)} | {76 + k: 48 + k for k in range(20)}
  for w, i in shared_98.items():
    np.testing.assert_array_equal(wflw[w], lm[i])
  shared_29 = {
    0: 17,
    1: 26,
    2: 21,
    3: 22,
    4: 19,
    6: 24,
    8: 36,
    9: 45,
    10: 39,
    11: 42,
    18: 31,
    19: 35,
    20: 30,
    21: 33,
    22: 48,
    23: 54,
    24: 51,
    25: 62,
    26: 66,
    27: 57,
    28: 8,
  }
  for c, i in shared_29.items():
    np.testing.assert_array_equal(cofw[c], lm[i])
  # Pupils are the eye centres; interpolated lid points lie between the corners.
  np.testing.assert_allclose(wflw[96], lm[36:42].mean(0))
  np.testing.assert_allclose(cofw[17], lm[42:48].mean(0))
  assert lm[36, 0] < wflw[62, 0] < lm[39, 0] and wflw[62, 1] < wflw[66, 1]


def test_mappings_commute_with_horizontal_flip():
  lm = random_face(1)
  flip = lambda points, order: np.stack([127 - points[:, 0], points[:, 1]], axis=1)[order]
  np.testing.assert_allclose(
    shapes.map_68_to_98(flip(lm, FLIP_68)), flip(shapes.map_68_to_98(lm), FLIP_98), atol=1e-9
  )
  np.testing.assert_allclose(
    shapes.map_68_to_29(flip(lm, FLIP_68)), flip(shapes.map_68_to_29(lm), FLIP_29), atol=1e-9
  )


def test_wflw_odd_contour_points_follow_the_generating_jaw_curve():
  # The mean jaw comes from a dense analytic curve; WFLW's in-between points, interpolated by
  # the spline, must lie on it within 1.5 % of the face half-width (the spline cuts the
  # corner of the squarish jaw by 1.1 %).
  dense = np.stack(shapes.jaw_outline(shapes.NEUTRAL, 0.02, 1.5), axis=1)
  wflw = shapes.map_68_to_98(shapes.mean_shape())
  start, direction = dense[:-1], np.diff(dense, axis=0)
  for k in range(1, 33, 2):
    # distance from the point to the polyline through the dense outline
    t = np.clip(((wflw[k] - start) * direction).sum(1) / (direction**2).sum(1), 0, 1)
    gap = np.sqrt(((start + t[:, None] * direction - wflw[k]) ** 2).sum(1)).min()
    assert gap < 0.015, (k, gap)


def test_schemes_render_mapped_landmarks():
  lm68 = synthetic.render_face(6, 0)["landmarks"].astype(np.float64)
  for num, mapping in ((98, shapes.map_68_to_98), (29, shapes.map_68_to_29)):
    face = synthetic.render_face(6, 0, dict(num_landmarks=num))
    assert face["landmarks"].shape == (num, 2) and face["occluded"].shape == (num,)
    np.testing.assert_allclose(face["landmarks"], mapping(lm68), atol=1e-4)


def test_mapping_rejects_wrong_shape():
  with pytest.raises(ValueError, match=r"\[\.\.\., 68, 2\]"):
    shapes.map_68_to_98(np.zeros((98, 2)))


# ------------------------------------------------------------------------------------ config


def test_config_from_configdict_and_errors():
  cfg = ml_collections.ConfigDict(
    dict(image_size=64, face_size_range=[0.5, 0.6], occlusion_prob=0.0)
  )
  face = synthetic.render_face(0, 0, cfg)
  assert face["image"].shape == (64, 64, 3)
  with pytest.raises(ValueError, match="image_sise"):
    synthetic.SyntheticConfig.from_mapping(dict(image_sise=64))
  with pytest.raises(ValueError, match="max_yaw_deg"):
    synthetic.SyntheticConfig(max_yaw_deg=80)
  with pytest.raises(ValueError, match="num_landmarks"):
    synthetic.SyntheticConfig(num_landmarks=5)
  with pytest.raises(ValueError, match="seed"):
    synthetic.render_face(-1, 0)
  with pytest.raises(ValueError, match="count"):
    synthetic.render_faces(0, 2.5)


def test_save_sample_grid_writes_annotated_png(tmp_path):
  path = tmp_path / "grid.png"
  synthetic.save_sample_grid(path, seed=1, config=dict(image_size=48), rows=2, zoom=2)
  grid = np.asarray(Image.open(path).convert("RGB"))
  assert grid.shape == (2 * 96 + 4, 2 * 96 + 4, 3)
  # Landmark dots are the overlays' green (visible) or red (occluded): at least one pixel each.
  from msm_jax.data import overlays

  dots = np.all(grid == overlays.KEPT_COLOUR, axis=-1) | np.all(
    grid == overlays.FLAGGED_COLOUR, axis=-1
  )
  assert dots.sum() > 4 * 68

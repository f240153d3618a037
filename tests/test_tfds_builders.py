"""Tests for msm_jax/data/tfds: the datasets prepared once as face crops (TFDS builders written
as ArrayRecord) and read back by the Grain pipeline (``PreparedSource``).

The reference is the folder path itself: a tiny 300-W tree of PNG photos (synthetic faces on
larger canvases, some near the border) is read both ways, and the training batches of one seed
must agree. The stored crop of these small photos keeps the photo's scale (a whole-pixel
window), so only the float rounding of the crop matrices differs between the two paths: the
sample points move by ~1e-5 px, which moves a bilinear value by ~255 x 1e-5 and can flip a
rounding tie, so pixels agree to 1 grey level; colour jitter then multiplies a 1-level change by
at most b c (s + |1 - s|) <= 1.2 x 1.2 x 1.4 = 2.02 before rounding again: 3 grey levels. A
sample point that sits within that 1e-5 px of one of OpenCV's 1/32-pixel position steps
(`augment.warp_image`) can take the neighbouring step on one path: (|f_x| + |f_y|) / 32 <= 16
grey levels, 33 after the jitter, for about 2 x 32 x 1e-5 of the pixels.
Downscaled stored crops (large photos) are checked on a smooth image, where the bilinear
interpolation error has a closed-form bound.
"""

import io
import json
import pickle
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from configs import base
from msm_jax.core import geometry
from msm_jax.data import augment, datasets, input_pipeline, synthetic, w300
from msm_jax.data.tfds import __main__ as build_cli
from msm_jax.data.tfds import crops, reading
from msm_jax.train import config_checks, stages

CROP = 64
BATCH = 4
PIXELS = ("images", "fake", "real")  # the batches' crops
BUILT = {"name": f"crop{CROP}", "crop_size": CROP, "image_format": "png"}
NAME = f"msm_300w/crop{CROP}"
# (folder, canvas height, width, face offset y, x): faces inside, at the border, past it.
PHOTOS = (
  ("afw", 150, 170, 30, 40),
  ("afw", 140, 120, 0, 10),
  ("helen/trainset", 130, 160, 20, 64),
  ("helen/trainset", 200, 200, 60, 50),
  ("lfpw/trainset", 110, 130, 8, 0),
  ("lfpw/trainset", 160, 150, 40, 30),
  ("ibug", 150, 150, 20, 20),
)
FACE_SIZE = 96


def _write_pts(path, landmarks):
  points = "\n".join(f"{x + 1:.6f} {y + 1:.6f}" for x, y in landmarks)  # .pts are 1-based
  path.write_text(f"version: 1\nn_points: 68\n{{\n{points}\n}}\n")


def _write_300w(root):
  """Synthetic faces pasted on black canvases, in 300-W's layout (PNG + .pts)."""
  config = synthetic.SyntheticConfig(image_size=FACE_SIZE)
  for index, (folder, height, width, top, left) in enumerate(PHOTOS):
    face = synthetic.render_face(0, index, config)
    photo = np.zeros((height, width, 3), np.uint8)
    bottom, right = min(height, top + FACE_SIZE), min(width, left + FACE_SIZE)
    photo[top:bottom, left:right] = face["image"][: bottom - top, : right - left]
    (root / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo).save(root / folder / f"face{index}.png")
    _write_pts(root / folder / f"face{index}.pts", face["landmarks"] + [left, top])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """(release folder, TFDS data folder): the tree built with `python -m msm_jax.data.tfds`'s
  own argument parsing."""
  root, data_dir = tmp_path_factory.mktemp("300w"), tmp_path_factory.mktemp("tfds")
  _write_300w(root)
  arguments = [
    "--config",
    json.dumps(BUILT),
    "--manual_dir",
    str(root),
    "--data_dir",
    str(data_dir),
  ]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "found N of M faces": the fixture is a sliver of 300-W
    build_cli._parse(["msm_jax.data.tfds", "build", "msm_300w", *arguments]).execute()
  return root, data_dir


def _config(root, data_dir, source="tfds"):
  config = base.get_config()
  config.stages = "hourglass"
  config.evaluate_after_training = False
  config.data.update(
    dataset="300w", root=str(root), source=source, tfds_data_dir=str(data_dir), crop_size=CROP
  )
  config.data.worker_count = 0
  config.hourglass.batch_size = config.stgan.batch_size = BATCH
  config.stgan.template_source = "fixed"
  config.augment.random_erasing = 0.5
  return config


def _sources(config):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    folder = input_pipeline.RecordSource(w300.read_300w(config.data.root, "train"))
  return folder, input_pipeline.PreparedSource(NAME, "train", config.data.tfds_data_dir)


def _batches(make, source, config, count=3):
  iterator = iter(make(source, config))
  return [next(iterator) for _ in range(count)]


# --- The stored window ------------------------------------------------------------------------


def test_stored_window_has_the_hand_computed_scale_and_side():
  spec = crops.CropSpec(crop_size=64, box_margin=1.25, rotation_degrees=30, scale=0.2)
  # Box 100 x 80: square side q = 125; reach (0.5 + 0.1)(cos 30 + sin 30) / 0.8 = 1.024519 q.
  matrix, side = crops.stored_window([[10.0, 20.0, 110.0, 100.0]], spec)
  scale = 1.2 * 64 / 125
  np.testing.assert_allclose(np.diag(matrix)[:2], [scale, scale])
  assert side == int(np.ceil(2 * 1.0245190528 * 125 * scale)) + 2 * crops.BORDER_PIXELS + 1
  np.testing.assert_allclose(geometry.apply_affine([[60.0, 60.0]], matrix), [[(side - 1) / 2] * 2])
  # A face smaller than the finest crop needs is kept at the photo's scale, whole pixels.
  matrix, side = crops.stored_window([[10.3, 20.0, 30.3, 36.0]], spec)
  np.testing.assert_array_equal(matrix[:2, :2], np.eye(2))
  assert matrix[0, 2] == -np.floor(20.3 - 1.0245190528 * 25) + crops.BORDER_PIXELS


class _ExtremeDraws:
  """Stands in for the example's generator: each draw at the end of its range (-1 or +1)."""

  def __init__(self, ends):
    self._ends = list(ends)

  def uniform(self, low, high, size=None):
    picks = [self._ends.pop(0) for _ in range(1 if size is None else size)]
    values = [high if pick > 0 else low for pick in picks]
    return values[0] if size is None else np.array(values)


@pytest.mark.parametrize("box", [[10.0, 20.0, 110.0, 100.0], [5.5, 7.25, 25.5, 47.0]])
def test_every_training_crop_samples_inside_the_stored_crop(box):
  """The extreme augmentations (largest angle, smallest zoom, largest shift, either sign)
  and the flip: each crop pixel centre and its bilinear neighbours lie in the stored crop."""
  spec = crops.CropSpec(crop_size=64, box_margin=1.25, rotation_degrees=30, scale=0.2)
  landmarks_box = [box[0] + 3, box[1] - 2, box[2] - 6, box[3] + 4]
  to_stored, side = crops.stored_window([landmarks_box, box], spec)
  last = spec.crop_size - 1
  centres = np.stack(np.meshgrid([0.0, last / 2, last], [0.0, last / 2, last]), -1).reshape(-1, 2)
  for crop_box in (landmarks_box, box):
    for sign_angle, sign_x, sign_y, flip in np.ndindex(2, 2, 2, 2):
      extreme = _ExtremeDraws([2 * sign_angle - 1, -1, 2 * sign_x - 1, 2 * sign_y - 1])
      matrix = augment.random_augmentation_matrix(
        extreme, spec.crop_size, spec.rotation_degrees, spec.scale, spec.translation
      ) @ augment.face_crop_matrix(crop_box, spec.crop_size, spec.box_margin)
      if flip:
        matrix = augment.flip_matrix(spec.crop_size) @ matrix
      stored = geometry.apply_affine(centres, to_stored @ geometry.invert_affine(matrix))
      assert stored.min() >= 1 and stored.max() <= side - 2, (stored.min(), stored.max(), side)


def test_a_whole_pixel_window_copies_the_photo_and_pads_with_zeros():
  photo = np.random.default_rng(0).integers(1, 256, (20, 30, 3), dtype=np.uint8)
  matrix = np.eye(3)
  matrix[:2, 2] = [5, -12]  # the window starts 5 px left of the photo and 12 px down it
  expected = np.zeros((16, 16, 3), np.uint8)
  expected[0:8, 5:16] = photo[12:20, 0:11]
  np.testing.assert_array_equal(crops.cut_window(photo, matrix, 16), expected)


def test_prepared_crops_serve_only_configs_within_their_build():
  built = crops.CropSpec(crop_size=128, box_margin=1.25, rotation_degrees=30, scale=0.2)
  config = base.get_config()  # crop 128, rotation 30, scale 0.1, translation 0.05; ST-GAN 0.1
  crops.check_serves(built, crops.config_spec(config), "built")
  # Reach 1.25 (0.5 + 0.1) sqrt(2) / 0.75 = 1.414 box sides > 1.25 x 0.6 x 1.366 / 0.8 = 1.281.
  config.augment.schedule = {"rotation_degrees": ((0, 10.0), (5, 45.0)), "scale": ((0, 0.25),)}
  with pytest.raises(ValueError, match=r"box_margin=1.25 with .* 45 degrees.* 1.414 .* 1.281"):
    crops.check_serves(built, crops.config_spec(config), "built")
  config.augment.schedule = {}
  config.data.crop_size = 160  # (1 + 0.1) 160 / 1.25 = 140.8 pixels per box side > 122.9
  with pytest.raises(ValueError, match=r"data.crop_size=160 .* needs 140.8 .* stores 122.9"):
    crops.check_serves(built, crops.config_spec(config), "built")


# --- Built both ways: the same faces, the same batches ---------------------------------------


def test_built_without_tensorflow_in_the_readers_order(prepared):
  root, data_dir = prepared
  folder, stored = _sources(_config(root, data_dir))
  info = reading.prepared_info(NAME, str(data_dir), str(root))
  assert {split: info.splits[split].num_examples for split in info.splits} == {
    "train": 6,
    "challenge": 1,
    "full": 1,
  }
  assert info.metadata["crop"] == crops.CropSpec(crop_size=CROP).to_dict()
  assert stored.names() == [record.image_path[len(str(root)) + 1 :] for record in folder.records]
  np.testing.assert_allclose(
    stored.image_landmarks(), np.stack([r.landmarks for r in folder.records]), atol=1e-4
  )
  assert "tensorflow" not in sys.modules


@pytest.mark.parametrize(
  "make, tolerances",
  [
    (input_pipeline.hourglass_train_dataset, {"images": 3, "landmarks": 1e-3}),
    (input_pipeline.stgan_train_dataset, {"fake": 3, "real": 3, "landmarks": 1e-3, "theta": 1e-4}),
  ],
)
def test_training_batches_equal_the_folders_with_the_same_seed(prepared, make, tolerances):
  config = _config(*prepared)
  folder, stored = _sources(config)
  for from_folder, from_stored in zip(*(_batches(make, s, config) for s in (folder, stored))):
    assert from_folder.keys() == from_stored.keys()
    for key, expected in from_folder.items():
      tolerance = tolerances.get(key, 0)
      difference = np.abs(np.asarray(from_stored[key], np.float64) - expected)
      if key in PIXELS:  # a position step taken differently: rare, and bounded (docstring)
        assert difference.max() <= 33 and np.mean(difference > tolerance) < 1e-3, key
      else:
        assert difference.max() <= tolerance, (key, difference.max())


def test_natural_occluders_keep_the_landmarks_and_flags(prepared):
  """A natural occluder's texture is a window of the image it is given: the photo on the folder
  path, the stored crop here, so only the pasted pixels may differ."""
  config = _config(*prepared)
  config.augment.natural_occluder, config.augment.color_jitter = 1.0, 0.0
  folder, stored = _sources(config)
  make = input_pipeline.hourglass_train_dataset
  for from_folder, from_stored in zip(*(_batches(make, s, config) for s in (folder, stored))):
    np.testing.assert_allclose(from_stored["landmarks"], from_folder["landmarks"], atol=1e-3)
    np.testing.assert_array_equal(from_stored["occluded"], from_folder["occluded"])


def test_downscaled_stored_crop_keeps_landmarks_and_smooth_pixels_within_the_bound():
  """A face too large for the finest training crop is stored at (1 + s) S / q pixels per
  photo pixel. On f = 127.5 + A sin(w x) + A sin(w y) bilinear interpolation on a grid of
  spacing h errs by at most e(h) = h^2 (f_xx + f_yy) / 8 = h^2 A w^2 / 4. The photo holds
  rint(f): the folder crop is within e(1) + 1 of f, the stored samples within e(1) + 1, the
  crop from them within e(1) + 1 + e(1 / scale) + 1/2: pixels differ by <= 2 e(1) + e(1/s) + 2.5."""
  amplitude, omega = 60.0, 2 * np.pi / 64
  rows, cols = np.mgrid[0:400, 0:400]
  smooth = 127.5 + amplitude * (np.sin(omega * cols + 0.3) + np.sin(omega * rows + 1.1))
  photo = np.repeat(np.rint(smooth)[..., None], 3, axis=2).astype(np.uint8)
  shape = synthetic.render_face(0, 0, synthetic.SyntheticConfig(image_size=128))["landmarks"]
  landmarks = (shape - shape.mean(0)) * 100 / np.ptp(shape, axis=0).max() + [203.3, 197.8]
  box = np.concatenate([landmarks.min(0) - 4, landmarks.max(0) + 6]).astype(np.float32)
  spec = crops.CropSpec(crop_size=CROP)
  face = crops.stored_face(photo, landmarks, box, spec)
  scale = 1 / face["crop_to_image"][0, 0]
  assert scale < 0.7  # resampled, not a whole-pixel window

  def error(spacing):
    return spacing**2 * amplitude * omega**2 / 4

  bound = int(2 * error(1.0) + error(1 / scale) + 2.5)
  transform = input_pipeline.HourglassTrainTransform(
    crop_size=CROP,
    box_margin=spec.box_margin,
    options=augment.AugmentOptions(flip=True, rotation_degrees=30, scale=0.1, translation=0.05),
    tables=input_pipeline.SchemeTables.from_name("300w"),
    crop_box="record",
  )

  def example(image, points, face_box):
    points = np.asarray(points, np.float32)
    return {
      "index": 0,
      "name": "smooth",
      "image": image,
      "landmarks": points,
      "occluded": np.zeros(68, bool),
      "box": np.asarray(face_box, np.float32),
    }

  for seed in range(8):
    expected = transform.random_map(example(photo, landmarks, box), np.random.default_rng(seed))
    stored = example(face["image"], face["landmarks"], face["box"])
    result = transform.random_map(stored, np.random.default_rng(seed))
    np.testing.assert_allclose(result["landmarks"], expected["landmarks"], atol=1e-3)
    difference = np.abs(result["images"].astype(int) - expected["images"]).max()
    assert difference <= bound, (seed, difference, bound)


# --- The prepared source in the library -----------------------------------------------------


def test_validation_split_and_evaluation_subsets_are_the_folders(prepared, tmp_path):
  root, data_dir = prepared
  listed = tmp_path / "validation.txt"
  listed.write_text("helen/trainset/face2.png\nlfpw/trainset/face5.png\n")
  prefix = len(str(root)) + 1
  for fields in ({"validation_list": str(listed)}, {"validation_fraction": 0.4}):
    names = {}
    for source in ("folder", "tfds"):
      config = _config(root, data_dir, source)
      config.data.update(fields)
      parts = datasets.train_and_validation_sources(config)
      names[source] = [[face["name"] for face in part] for part in parts]
    relative = [[name[prefix:] for name in part] for part in names["folder"]]
    assert names["tfds"] == relative and len(relative[1]) == 2, names
  config = _config(root, data_dir)
  config.data.eval_splits = ("common", "challenge", "full")
  with pytest.warns(UserWarning, match="split 'common' was not prepared"):
    subsets = datasets.eval_sources(config)
  assert {name: len(source) for name, source in subsets.items()} == {"challenge": 1, "full": 1}


def test_the_source_pickles_unopened_and_names_what_it_cannot_read(prepared):
  _, stored = _sources(_config(*prepared))
  first = stored[0]
  copy = pickle.loads(pickle.dumps(stored))
  assert copy._faces is None  # opened again in the process that unpickles it
  np.testing.assert_array_equal(copy[0]["image"], first["image"])
  subset = stored.subset([3, 1])
  assert [face["name"] for face in subset] == [stored[3]["name"], stored[1]["name"]]
  with pytest.raises(IndexError, match="index 6 outside"):
    stored[6]
  with pytest.raises(ValueError, match=r"cannot read image msm_300w/crop64 train\[2\] \(face\)"):
    reading.decode_image(b"not an image", "msm_300w/crop64 train[2] (face)")


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_a_stored_crop_decodes_to_pils_pixels_and_a_cut_jpeg_is_refused(image_format):
  rng = np.random.default_rng(4)
  pixels = np.clip(rng.normal(128, 40, (48, 40, 3)), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, image_format, quality=95)
  data = buffer.getvalue()
  expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
  np.testing.assert_array_equal(reading.decode_image(data, "face"), expected)
  with pytest.raises(ValueError, match=r"cannot read image face: .*(cut short|not a JPEG)"):
    reading.decode_image(data[: len(data) // 2], "face")


def test_train_py_checks_say_what_to_build_and_the_stage_reads_the_split(prepared, tmp_path):
  root, data_dir = prepared
  config = _config(root, data_dir)
  assert config_checks.check_config(config) == ("hourglass",)
  batch = next(iter(stages.STAGES["hourglass"].data(_sources(config)[1], config)))
  assert batch["images"].shape == (BATCH, CROP, CROP, 3)
  config.data.tfds_data_dir = str(tmp_path / "elsewhere")
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.check_config(config)
  assert str(error.value) == (
    f"config data.source='tfds': the prepared dataset msm_300w/crop64 is not in "
    f"{tmp_path / 'elsewhere'}: run `python -m msm_jax.data.tfds build msm_300w --config "
    f"""'{{"name": "crop64", "crop_size": 64}}' --manual_dir {root} """
    f"--data_dir {tmp_path / 'elsewhere'}`"
  )
  for field, value, named in (
    ("source", "nowhere", "data.source='nowhere': expected one of folder, tfds"),
    ("dataset", "synthetic", "dataset 'synthetic' has no prepared form"),
  ):
    config = _config(root, data_dir)
    config.data[field] = value
    with pytest.raises(config_checks.ConfigError, match=named):
      config_checks.check_config(config)
  config = _config(root, data_dir)
  config.augment.translation = 0.3
  with pytest.raises(config_checks.ConfigError, match="msm_300w/crop64 covers 1.281"):
    config_checks.check_config(config)

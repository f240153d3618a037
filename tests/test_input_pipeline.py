"""Tests for msm_jax.data.input_pipeline: the Grain pipeline feeding both training stages and
the evaluation (Sec. III-A, III-B, IV-C).

Faces come from two kinds of fixtures: synthetic faces (``SyntheticSource``) for layout,
determinism and resuming, and hand-made "dot" records whose landmark k is drawn as a blob
with an identity colour, so a test can read off the image where each landmark really is and
which landmark it is, independently of the pipeline's own matrices.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from msm_jax.core import geometry
from msm_jax.core.landmarks import get_scheme
from msm_jax.data import input_pipeline
from msm_jax.data.images import ImageReadError
from msm_jax.data.records import FaceRecord

# configs/ lives at the repository root, outside the installed package.
_REPOSITORY = str(Path(__file__).resolve().parents[1])
from configs import synthetic as synthetic_experiment  # noqa: E402

CROP = 128
BATCH = 4
NUM_FACES = 10

HOURGLASS_LAYOUT = {
  "images": ((BATCH, CROP, CROP, 3), np.uint8),
  "landmarks": ((BATCH, 68, 2), np.float32),
  "visible": ((BATCH, 68), np.bool_),
  "occluded": ((BATCH, 68), np.bool_),
  "index": ((BATCH,), np.int32),
}
STGAN_LAYOUT = {
  "fake": ((BATCH, CROP, CROP, 3), np.uint8),
  "real": ((BATCH, CROP, CROP, 3), np.uint8),
  "theta": ((BATCH, 2, 3), np.float32),
  "landmarks": ((BATCH, 68, 2), np.float32),  # in I_fake, for the joint stage
  "visible": ((BATCH, 68), np.bool_),
  "index": ((BATCH,), np.int32),
}
EVAL_LAYOUT = dict(
  HOURGLASS_LAYOUT,
  crop_matrix=((BATCH, 3, 3), np.float32),
  image_landmarks=((BATCH, 68, 2), np.float32),
)


def _config(scheme="300w"):
  """The synthetic experiment at test size: batch 4, no worker processes."""
  config = synthetic_experiment.get_config()
  assert config.data.crop_size == CROP
  config.data.scheme = scheme
  config.data.worker_count = 0
  config.hourglass.batch_size = BATCH
  config.stgan.batch_size = BATCH
  # The template as given: the data-derived one is tested in test_stgan_pairs.py.
  config.stgan.template_source = "fixed"
  return config


def _synthetic_source(config, num_faces=NUM_FACES):
  return input_pipeline.SyntheticSource(config.seed, num_faces, config.data.synthetic)


def _train_dataset(kind, source, config, **kwargs):
  make = {
    "hourglass": input_pipeline.hourglass_train_dataset,
    "stgan": input_pipeline.stgan_train_dataset,
  }[kind]
  return make(source, config, **kwargs)


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_same_batches(first, second):
  assert len(first) == len(second)
  for one, other in zip(first, second):
    assert one.keys() == other.keys()
    for key in one:
      np.testing.assert_array_equal(one[key], other[key], err_msg=key)


def _assert_layout(batch, layout):
  assert set(batch) == set(layout)
  for key, (shape, dtype) in layout.items():
    assert batch[key].shape == shape, key
    assert batch[key].dtype == dtype, key


def _inside_crop(points):
  """Hand-written: within the crop's area [-0.5, S - 0.5]^2."""
  return np.all((points >= -0.5) & (points <= CROP - 0.5), axis=-1)


# --- Dot faces: landmark k is a Gaussian blob (channel 0) on a disc of identity colour
# 40 + 7 k (channel 1), on black. 29 points: the COFW scheme.

DOT_SIGMA = 1.5


def _identity_colour(index):
  return 40 + 7 * np.asarray(index)


def _dot_image(landmarks, size):
  rows, cols = np.mgrid[0:size, 0:size]
  image = np.zeros((size, size, 3), np.float64)
  for index, (x, y) in enumerate(landmarks):
    squared = (cols - x) ** 2 + (rows - y) ** 2
    image[..., 0] += 255 * np.exp(-squared / (2 * DOT_SIGMA**2))
    image[..., 1] = np.where(
      squared <= (2.5 * DOT_SIGMA) ** 2, _identity_colour(index), image[..., 1]
    )
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _dot_faces(count, size=200):
  """(landmarks [29, 2], box [4], occluded [29], image) per face; the box is NOT the
  landmarks' tight box, so "record" and "landmarks" crops differ."""
  faces = []
  for face in range(count):
    rng = np.random.default_rng(face)
    # A 6 x 5 grid 24 px apart (29 of its nodes), jittered to non-integer positions.
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(5)), axis=-1).reshape(-1, 2)[:29]
    landmarks = 40.0 + 24.0 * grid + rng.uniform(-3, 3, (29, 2))
    box = np.concatenate([landmarks.min(0) - [10, 5], landmarks.max(0) + [4, 12]])
    occluded = rng.uniform(size=29) < 0.3
    faces.append((landmarks, box, occluded, _dot_image(landmarks, size)))
  return faces


def _in_memory_records(faces):
  return [
    FaceRecord(None, landmarks, box, "dots", occluded=occluded, image=image)
    for landmarks, box, occluded, image in faces
  ]


def _blob_centroid(crop, point, radius=5):
  """Sub-pixel centre of the blob (channel 0) near ``point`` in a crop."""
  x0, y0 = np.rint(point).astype(int)
  rows, cols = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
  weights = crop[rows, cols, 0].astype(np.float64)
  return np.array([(weights * cols).sum(), (weights * rows).sum()]) / weights.sum()


def _dot_positions(crop, margin=7):
  """{landmark k: sub-pixel centre of its dot} for the dots well inside a crop, found by
  their identity colour alone (no matrix of the pipeline involved)."""
  positions = {}
  for index in range(29):
    # Inside the disc (a 3 x 3 block of the exact colour): interpolated edges of other
    # discs can hit the value on single pixels.
    disc = ndimage.binary_erosion(
      crop[..., 1] == _identity_colour(index), structure=np.ones((3, 3), bool)
    )
    rows, cols = np.nonzero(disc)
    guess = np.array([cols.mean(), rows.mean()]) if len(rows) else None
    if guess is None or not np.all((guess >= margin) & (guess <= CROP - 1 - margin)):
      continue
    positions[index] = _blob_centroid(crop, _blob_centroid(crop, guess))  # re-centred
  return positions


# --- 1. Layout ---------------------------------------------------------------------------


def test_hourglass_batch_layout_and_visibility():
  config = _config()
  batch = next(iter(input_pipeline.hourglass_train_dataset(_synthetic_source(config), config)))
  _assert_layout(batch, HOURGLASS_LAYOUT)
  np.testing.assert_array_equal(batch["visible"], _inside_crop(batch["landmarks"]))
  assert len(set(batch["index"].tolist())) == BATCH
  assert set(batch["index"].tolist()) <= set(range(NUM_FACES))
  assert all(image.std() > 10 for image in batch["images"])  # faces, not blank crops


def test_stgan_batch_layout_and_theta_is_a_similarity():
  config = _config()
  batch = next(iter(input_pipeline.stgan_train_dataset(_synthetic_source(config), config)))
  _assert_layout(batch, STGAN_LAYOUT)
  # Both crops are similarities of the source image, so theta* is one too.
  linear = batch["theta"][:, :, :2]
  np.testing.assert_allclose(linear[:, 0, 0], linear[:, 1, 1], atol=1e-5)
  np.testing.assert_allclose(linear[:, 0, 1], -linear[:, 1, 0], atol=1e-5)
  assert not np.allclose(batch["fake"], batch["real"])


def test_stgan_theta_carries_each_dot_of_i_real_onto_the_same_dot_of_i_fake():
  config = _config(scheme="cofw")
  config.augment.color_jitter = 0.0  # keeps the identity colours exact
  faces = _dot_faces(6)
  source = input_pipeline.RecordSource(_in_memory_records(faces))
  batches = _take(iter(input_pipeline.stgan_train_dataset(source, config, seed=0)), 2)
  for batch in batches:
    for slot in range(BATCH):
      # theta* maps normalised I_real coordinates to normalised I_fake coordinates.
      real_to_fake = geometry.theta_to_pixel_matrix(
        batch["theta"][slot].astype(np.float64), (CROP, CROP), (CROP, CROP)
      )
      in_real = _dot_positions(batch["real"][slot])
      in_fake = _dot_positions(batch["fake"][slot])
      common = sorted(set(in_real) & set(in_fake))
      assert len(common) >= 10, (slot, common)
      np.testing.assert_allclose(
        geometry.apply_affine(np.array([in_real[k] for k in common]), real_to_fake),
        np.array([in_fake[k] for k in common]),
        atol=0.1,
      )


def test_eval_batch_layout():
  config = _config()
  batch = next(
    iter(input_pipeline.eval_dataset(_synthetic_source(config), config, batch_size=BATCH))
  )
  _assert_layout(batch, EVAL_LAYOUT)
  np.testing.assert_array_equal(batch["index"], np.arange(BATCH))


# --- 2-4. Determinism, resume, epochs -----------------------------------------------------


@pytest.mark.parametrize("kind", ["hourglass", "stgan"])
def test_same_seed_same_batches_other_seed_differs(kind):
  config = _config()
  source = _synthetic_source(config)
  first = _take(iter(_train_dataset(kind, source, config, seed=5)), 3)
  again = _take(iter(_train_dataset(kind, source, config, seed=5)), 3)
  other = _take(iter(_train_dataset(kind, source, config, seed=6)), 3)
  _assert_same_batches(first, again)
  for one, different in zip(first, other):
    image_key = "images" if kind == "hourglass" else "fake"
    assert not np.array_equal(one["index"], different["index"])
    assert not np.array_equal(one[image_key], different[image_key])


@pytest.mark.parametrize("kind", ["hourglass", "stgan"])
def test_resume_from_json_state_gives_the_same_next_batches(kind):
  config = _config()
  source = _synthetic_source(config)
  iterator = iter(_train_dataset(kind, source, config, seed=3))
  _take(iterator, 5)  # 20 faces: past the end of the first 10-face epoch
  state = json.loads(json.dumps(iterator.get_state()))
  expected = _take(iterator, 3)

  resumed = iter(_train_dataset(kind, source, config, seed=3))
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 3), expected)
  # A fresh iterator without the state starts over, i.e. the state did something.
  fresh = next(iter(_train_dataset(kind, source, config, seed=3)))
  assert not np.array_equal(fresh["index"], expected[0]["index"])


def test_epochs_reshuffle_and_cover_every_face_once():
  config = _config()
  source = _synthetic_source(config)
  # 10 faces, batches of 4: epochs end mid-batch and the stream runs on across them.
  batches = _take(iter(input_pipeline.hourglass_train_dataset(source, config, seed=1)), 5)
  order = np.concatenate([batch["index"] for batch in batches])
  landmarks = np.concatenate([batch["landmarks"] for batch in batches])
  first_epoch, second_epoch = order[:NUM_FACES], order[NUM_FACES:]
  np.testing.assert_array_equal(np.sort(first_epoch), np.arange(NUM_FACES))
  np.testing.assert_array_equal(np.sort(second_epoch), np.arange(NUM_FACES))
  assert not np.array_equal(first_epoch, second_epoch)
  # The same face gets a new augmentation in the next epoch.
  for face in range(NUM_FACES):
    seen = np.flatnonzero(order == face)
    assert not np.allclose(landmarks[seen[0]], landmarks[seen[1]], atol=0.1)

  # A finite number of epochs drops the remainder: 10 faces -> 2 full batches, the same
  # ones as the endless stream's.
  one_epoch = list(input_pipeline.hourglass_train_dataset(source, config, seed=1, num_epochs=1))
  _assert_same_batches(one_epoch, batches[:2])


def test_shards_split_every_epoch_into_disjoint_parts():
  config = _config()
  config.hourglass.batch_size = NUM_FACES // 2
  source = _synthetic_source(config)
  shards = [
    list(
      input_pipeline.hourglass_train_dataset(
        source, config, seed=2, num_epochs=1, shard_index=shard, shard_count=2
      )
    )
    for shard in range(2)
  ]
  assert [len(batches) for batches in shards] == [1, 1]
  parts = [set(batches[0]["index"].tolist()) for batches in shards]
  assert parts[0].isdisjoint(parts[1])
  assert parts[0] | parts[1] == set(range(NUM_FACES))


class _OneFaceRepeated:
  """Every index is the same face: only the augmentation can tell positions apart."""

  def __init__(self, source):
    self._example = source[0]

  def __len__(self):
    return NUM_FACES

  def __getitem__(self, index):
    return dict(self._example, index=index)


def test_shards_draw_their_own_augmentations():
  config = _config()
  config.hourglass.batch_size = NUM_FACES // 2
  source = _OneFaceRepeated(_synthetic_source(config))
  shards = [
    next(
      iter(
        input_pipeline.hourglass_train_dataset(
          source, config, seed=2, num_epochs=1, shard_index=shard, shard_count=2
        )
      )
    )
    for shard in range(2)
  ]
  # Same face at the same position on both hosts: the crops must still differ.
  for first, second in zip(shards[0]["landmarks"], shards[1]["landmarks"]):
    assert not np.allclose(first, second, atol=0.1)


# --- 5. Worker processes ------------------------------------------------------------------


def test_two_worker_processes_give_the_same_batches_as_none():
  # Spawns two processes (a few seconds): kept to 2 batches.
  config = _config()
  source = _synthetic_source(config)
  in_process = _take(
    iter(input_pipeline.hourglass_train_dataset(source, config, seed=4, worker_count=0)), 2
  )
  with_workers = _take(
    iter(input_pipeline.hourglass_train_dataset(source, config, seed=4, worker_count=2)), 2
  )
  _assert_same_batches(with_workers, in_process)


# --- 6. Landmarks follow the image --------------------------------------------------------


def test_augmented_landmarks_sit_on_their_own_dots():
  config = _config(scheme="cofw")
  config.augment.color_jitter = 0.0  # keeps the identity colours exact
  config.augment.random_erasing = 0.0
  assert config.augment.flip and config.augment.rotation_degrees == 30.0
  permutation = np.asarray(get_scheme("cofw").flip_permutation)
  faces = _dot_faces(6)
  source = input_pipeline.RecordSource(_in_memory_records(faces))
  batches = _take(iter(input_pipeline.hourglass_train_dataset(source, config, seed=0)), 3)

  flips, angles, checked = 0, [], 0
  for batch in batches:
    for slot, face in enumerate(batch["index"]):
      landmarks, _, occluded, _ = faces[face]
      crop, crop_landmarks = batch["images"][slot], batch["landmarks"][slot]
      # The crop landmarks are a similarity of the face's landmarks, renamed
      # left <-> right when the crop is mirrored: find which.
      fits = {}
      for name, order in (("plain", np.arange(29)), ("flipped", permutation)):
        matrix = geometry.estimate_affine(landmarks[order], crop_landmarks)
        residual = np.abs(geometry.apply_affine(landmarks[order], matrix) - crop_landmarks).max()
        fits[name] = (residual, matrix, order)
      name = min(fits, key=lambda key: fits[key][0])
      residual, matrix, order = fits[name]
      assert residual < 1e-3
      # A mirrored crop has a reflecting map (det < 0); a plain one does not.
      assert (np.linalg.det(matrix[:2, :2]) < 0) == (name == "flipped")
      flips += name == "flipped"
      angles.append(np.degrees(np.arctan2(matrix[1, 0], abs(matrix[0, 0]))))

      np.testing.assert_array_equal(batch["visible"][slot], _inside_crop(crop_landmarks))
      np.testing.assert_array_equal(batch["occluded"][slot], occluded[order])
      for point, source_index in zip(crop_landmarks, order):
        if not np.all((point >= 5) & (point <= CROP - 6)):
          continue  # its dot is (partly) outside the crop
        x, y = np.rint(point).astype(int)
        assert crop[y, x, 1] == _identity_colour(source_index)
        np.testing.assert_allclose(_blob_centroid(crop, point), point, atol=0.1)
        checked += 1
  assert 0 < flips < 3 * BATCH  # both branches exercised
  assert np.ptp(angles) > 15.0  # rotations really vary
  assert checked > 0.8 * 3 * BATCH * 29


# --- 7. Evaluation ------------------------------------------------------------------------


@pytest.mark.parametrize("crop_box", ["default", "landmarks"])
def test_eval_in_order_with_remainder_and_exact_crop_matrix(crop_box):
  config = _config(scheme="cofw")
  faces = _dot_faces(NUM_FACES)
  source = input_pipeline.RecordSource(_in_memory_records(faces))
  chosen = {} if crop_box == "default" else {"crop_box": crop_box}  # default: the record's
  batches = list(input_pipeline.eval_dataset(source, config, batch_size=BATCH, **chosen))
  assert [len(batch["index"]) for batch in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), np.arange(NUM_FACES))
  for batch in batches:
    # crop_matrix maps image_landmarks onto landmarks, in homogeneous coordinates.
    image_points = batch["image_landmarks"].astype(np.float64)
    homogeneous = np.concatenate([image_points, np.ones(image_points.shape[:2] + (1,))], -1)
    mapped = np.einsum("bij,blj->bli", batch["crop_matrix"].astype(np.float64), homogeneous)
    np.testing.assert_allclose(mapped[..., :2], batch["landmarks"], atol=1e-3)
    np.testing.assert_allclose(mapped[..., 2], 1.0)
    np.testing.assert_array_equal(batch["visible"], _inside_crop(batch["landmarks"]))

    for slot, face in enumerate(batch["index"]):
      landmarks, box, occluded, _ = faces[face]
      np.testing.assert_allclose(batch["image_landmarks"][slot], landmarks, atol=1e-5)
      np.testing.assert_array_equal(batch["occluded"][slot], occluded)
      # Hand formula: a square of side 1.25 * max(box w, h) about the box centre,
      # whose edges become the crop's edges [-0.5, 127.5].
      if crop_box == "landmarks":
        box = np.concatenate([landmarks.min(0), landmarks.max(0)])
      side = 1.25 * max(box[2] - box[0], box[3] - box[1])
      corner = (box[:2] + box[2:]) / 2 - side / 2
      expected = np.array(
        [
          [CROP / side, 0, -corner[0] * CROP / side - 0.5],
          [0, CROP / side, -corner[1] * CROP / side - 0.5],
          [0, 0, 1],
        ]
      )
      np.testing.assert_allclose(batch["crop_matrix"][slot], expected, atol=1e-4)
      # Not augmented: each landmark sits on its own identity colour, in order.
      for index, point in enumerate(batch["landmarks"][slot]):
        x, y = np.rint(point).astype(int)
        assert batch["images"][slot][y, x, 1] == _identity_colour(index)


def test_without_augmentation_training_crops_are_the_eval_crops_of_the_landmark_box():
  config = _config(scheme="cofw")
  for field in ("rotation_degrees", "scale", "translation", "color_jitter"):
    config.augment[field] = 0.0
  config.augment.flip = False
  source = input_pipeline.RecordSource(_in_memory_records(_dot_faces(BATCH)))
  train = next(iter(input_pipeline.hourglass_train_dataset(source, config, num_epochs=1)))
  order = np.argsort(train["index"])
  (by_landmarks,) = input_pipeline.eval_dataset(
    source, config, batch_size=BATCH, crop_box="landmarks"
  )
  (by_record,) = input_pipeline.eval_dataset(source, config, batch_size=BATCH)
  for key in HOURGLASS_LAYOUT:
    np.testing.assert_array_equal(train[key][order], by_landmarks[key], err_msg=key)
  # The evaluation's default is the record's own box, which differs here.
  assert not np.allclose(by_record["crop_matrix"], by_landmarks["crop_matrix"], atol=1e-2)


# --- 8. Bad samples -----------------------------------------------------------------------

BAD_FACE = 2


def _file_records(tmp_path, damage):
  """Five dot faces as PNG files; face BAD_FACE's file is corrupt or missing."""
  records = []
  for index, (landmarks, box, occluded, image) in enumerate(_dot_faces(5)):
    path = tmp_path / f"face_{index}.png"
    Image.fromarray(image).save(path)
    if index == BAD_FACE and damage == "corrupt":
      path.write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    elif index == BAD_FACE:
      path.unlink()
    records.append(FaceRecord(str(path), landmarks, box, "dots", occluded=occluded))
  return records, tmp_path / f"face_{BAD_FACE}.png"


@pytest.mark.parametrize(
  "damage, error", [("corrupt", ImageReadError), ("missing", FileNotFoundError)]
)
def test_bad_file_raises_naming_it_without_skipping(tmp_path, damage, error):
  config = _config(scheme="cofw")
  records, bad_path = _file_records(tmp_path, damage)
  with pytest.raises(error, match=re.escape(str(bad_path))):
    list(
      input_pipeline.eval_dataset(input_pipeline.RecordSource(records), config, batch_size=BATCH)
    )
  with pytest.raises(error, match=re.escape(str(bad_path))):
    # 3 batches of 4 from 5 faces: the bad one comes up at least twice.
    _take(
      iter(input_pipeline.hourglass_train_dataset(input_pipeline.RecordSource(records), config)), 3
    )


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_bad_file_is_skipped_and_the_stream_goes_on(tmp_path, caplog, damage):
  config = _config(scheme="cofw")
  records, bad_path = _file_records(tmp_path, damage)

  source = input_pipeline.RecordSource(records, skip_bad_samples=True)
  batches = list(input_pipeline.eval_dataset(source, config, batch_size=BATCH))
  assert [len(batch["index"]) for batch in batches] == [4]
  np.testing.assert_array_equal(batches[0]["index"], [0, 1, 3, 4])
  for slot, face in enumerate(batches[0]["index"]):
    np.testing.assert_allclose(batches[0]["image_landmarks"][slot], records[face].landmarks)
  assert source.skipped == 1
  assert str(bad_path) in caplog.text

  # Training: 4 good faces per epoch; the stream runs on over several epochs without it.
  source = input_pipeline.RecordSource(records, skip_bad_samples=True)
  batches = _take(iter(input_pipeline.hourglass_train_dataset(source, config, seed=0)), 4)
  order = np.concatenate([batch["index"] for batch in batches])
  assert all(len(batch["index"]) == BATCH for batch in batches)
  assert BAD_FACE not in order
  assert set(order.tolist()) == {0, 1, 3, 4}
  assert source.skipped >= 3


# --- Misuse -------------------------------------------------------------------------------


def test_misuse_raises_clear_errors():
  config = _config()
  source = _synthetic_source(config)
  with pytest.raises(ValueError, match="no records"):
    input_pipeline.RecordSource([])
  with pytest.raises(ValueError, match="num_faces > 0"):
    input_pipeline.SyntheticSource(0, 0)
  with pytest.raises(IndexError, match="outside"):
    source[NUM_FACES]
  with pytest.raises(ValueError, match="shard_index"):
    input_pipeline.hourglass_train_dataset(source, config, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match="cannot fill one batch"):
    input_pipeline.hourglass_train_dataset(_synthetic_source(config, 3), config)
  with pytest.raises(ValueError, match="crop_box"):
    input_pipeline.eval_dataset(source, config, batch_size=BATCH, crop_box="detector")
  with pytest.raises(ValueError, match="batch_size"):
    input_pipeline.eval_dataset(source, config, batch_size=0)
  # 68-point faces read with the 98-point scheme: the error names the face.
  config.data.scheme = "wflw"
  with pytest.raises(ValueError, match="synthetic face .* has 68 landmarks but the scheme"):
    next(iter(input_pipeline.hourglass_train_dataset(source, config)))


def test_the_augmentation_schedule_follows_the_epoch_and_survives_a_resume():
  """Shift jitter scheduled off for the first epoch and on from the second: the first epoch's
  crops are exactly the landmark-box eval crops, every crop of the second differs from them,
  and an iterator restored at the epoch boundary continues with the second epoch's crops."""
  config = _config(scheme="cofw")
  for field in ("rotation_degrees", "scale", "translation", "color_jitter"):
    config.augment[field] = 0.0
  config.augment.flip = False
  config.augment.schedule.translation = ((1.0, 0.0), (1.0, 0.3))
  source = input_pipeline.RecordSource(_in_memory_records(_dot_faces(2 * BATCH)))
  (reference,) = input_pipeline.eval_dataset(
    source, config, batch_size=2 * BATCH, crop_box="landmarks"
  )
  dataset = input_pipeline.hourglass_train_dataset(source, config, num_epochs=2)
  iterator = iter(dataset)
  first_epoch = [next(iterator) for _ in range(2)]
  state = iterator.get_state()
  second_epoch = [next(iterator) for _ in range(2)]
  for batch in first_epoch:
    np.testing.assert_array_equal(batch["landmarks"], reference["landmarks"][batch["index"]])
  for batch in second_epoch:
    shift = batch["landmarks"] - reference["landmarks"][batch["index"]]
    assert np.all(np.abs(shift).max(axis=(1, 2)) > 0)
    # A pure shift: every landmark moves by the same vector, at most 0.3 of the crop.
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1], shift.shape), atol=1e-3)
    assert np.all(np.abs(shift) <= 0.3 * CROP + 1e-3)
  resumed = iter(dataset)
  resumed.set_state(json.loads(json.dumps(state)))
  for expected in second_epoch:
    np.testing.assert_array_equal(next(resumed)["images"], expected["images"])

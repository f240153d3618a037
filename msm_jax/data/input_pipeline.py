"""The Grain input pipeline: what each training stage and the evaluation consume (Sec. IV-C).

    source (random access: dataset records, prepared face crops, or synthetic faces
            rendered on demand)
      -> seeded shuffle, reshuffled every epoch -> shard (one slice per host) -> repeat
      -> per-example transform with its own RNG (Grain ``random_map``: seeded by
         the pipeline seed and the example's position, so every epoch differs and
         every run with the same seed is identical)
      -> worker processes (``mp_prefetch``) -> batches (stacked NumPy, in order)

Batches (NumPy, stacked along a new leading axis B):

* hourglass training (Sec. III-B): ``images`` uint8 [B, S, S, 3], ``landmarks``
  float32 [B, L, 2] in crop pixels, ``visible`` bool [B, L] (inside the crop),
  ``occluded`` bool [B, L] (dataset flag or random-erasing patch);
* ST-GAN training (Sec. III-A): ``fake`` / ``real`` uint8 [B, S, S, 3] and
  ``theta`` float32 [B, 2, 3] (``stgan_pairs.py``);
* evaluation: the hourglass keys without augmentation, plus ``crop_matrix``
  float32 [B, 3, 3] (image -> crop pixels, to map predictions back) and
  ``image_landmarks`` float32 [B, L, 2]; not shuffled, the last batch may be
  smaller.

Every batch also has ``index`` int32 [B]: each face's position in the source.
Training batches run on across epoch boundaries (an epoch is len(source) faces,
not a whole number of batches); only a finite ``num_epochs`` drops a remainder.

Resuming: ``iterator.get_state()`` is a JSON-serialisable dict;
``iter(same dataset).set_state(state)`` continues with exactly the batches the
saved run would have seen next (same seed, config and worker count).

Batches are formed after the workers, in the main process, from the examples in
source order, so without skipped samples their content does not depend on the
worker count. Transforms are importable top-level classes (workers unpickle
them). Worker processes are spawned: a program using workers needs an
``if __name__ == "__main__":`` guard; absl flags are marked parsed here if the
program did not parse them (Grain reads its own flags).

Per-example work is NumPy + PIL only; no JAX array or device is touched in the
workers (Grain 0.2.18 itself imports the jax module in every process, so the
import cannot be avoided, but nothing initialises a backend there).
"""

from __future__ import annotations

import dataclasses
import logging

import grain
import numpy as np

from msm_jax.core import geometry
from msm_jax.core.landmarks import get_scheme
from msm_jax.data import augment, stgan_pairs, synthetic
from msm_jax.data.images import ImageReadError, record_image
from msm_jax.data.records import box_from_landmarks
from msm_jax.data.tfds import reading

_logger = logging.getLogger(__name__)


def _example(index, name, image, landmarks, occluded, box) -> dict:
  """The raw example every source yields (before cropping)."""
  landmarks = np.asarray(landmarks, np.float32)
  return {
    "index": int(index),
    "name": name,
    "image": image,
    "landmarks": landmarks,
    "occluded": (
      np.zeros(landmarks.shape[0], bool) if occluded is None else np.asarray(occluded, bool)
    ),
    "box": np.asarray(box, np.float32),
  }


class RecordSource:
  """Random access to dataset faces (``FaceRecord`` s from the readers); loads pixels on demand.

  ``source[k]`` is a dict: ``image`` uint8 [H, W, 3], ``landmarks`` float32 [L, 2],
  ``occluded`` bool [L], ``box`` float32 [4], ``index`` k and ``name`` (the
  image path, for messages). A face whose image fails to load raises
  (FileNotFoundError / ImageReadError, naming the file), or with
  ``skip_bad_samples`` is logged, counted and returned as None, which the
  pipeline drops.
  """

  def __init__(self, records, skip_bad_samples: bool = False):
    self._records = list(records)
    if not self._records:
      raise ValueError("RecordSource: no records (empty split or wrong data.root?)")
    self._skip_bad_samples = skip_bad_samples
    self.skipped = 0  # per process: each worker counts what it skipped

  def __len__(self) -> int:
    return len(self._records)

  @property
  def records(self) -> list:
    """The FaceRecords, in source order (landmarks without loading pixels)."""
    return list(self._records)

  def __getitem__(self, index: int) -> dict | None:
    record = self._records[index]
    try:
      image = record_image(record)
    except (FileNotFoundError, ImageReadError) as error:
      if not self._skip_bad_samples:
        raise
      self.skipped += 1
      _logger.warning(
        "skipping face %d: %s (%d skipped so far in this process)", index, error, self.skipped
      )
      return None
    return _example(index, record.source, image, record.landmarks, record.occluded, record.box)


class SyntheticSource:
  """Random access to synthetic faces: ``source[k]`` renders face ``first_index + k`` on demand.

  ``synthetic.render_face(seed, index, config)`` depends on (seed, index) only, so
  any worker renders any face identically and nothing is stored. Examples as
  :class:`RecordSource` (``box``: the landmarks' tight box).

  Args:
    seed: the synthetic data set's seed.
    num_faces: how many faces the source holds.
    config: a ``synthetic.SyntheticConfig`` (or a mapping of its fields).
    first_index: face index of ``source[0]`` (disjoint ranges make splits).
  """

  def __init__(self, seed: int, num_faces: int, config=None, first_index: int = 0):
    if num_faces <= 0 or first_index < 0:
      raise ValueError(
        f"SyntheticSource needs num_faces > 0 and first_index >= 0, got {num_faces}, {first_index}"
      )
    self._seed = int(seed)
    self._num_faces = int(num_faces)
    self._first_index = int(first_index)
    if config is None:
      config = synthetic.SyntheticConfig()
    elif not isinstance(config, synthetic.SyntheticConfig):
      config = synthetic.SyntheticConfig.from_mapping(config)
    self._config = config

  def __len__(self) -> int:
    return self._num_faces

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self._num_faces:
      raise IndexError(f"SyntheticSource index {index} outside [0, {self._num_faces})")
    face_index = self._first_index + int(index)
    face = synthetic.render_face(self._seed, face_index, self._config)
    return _example(
      index,
      f"synthetic face {face_index} of seed {self._seed}",
      face["image"],
      face["landmarks"],
      face["occluded"],
      face["box"],
    )


class PreparedSource:
  """Random access to one split of a prepared dataset (``msm_jax/data/tfds``), read through
  ``tfds.data_source``: no photo is decoded, only the stored face crop.

  ``source[k]`` is :class:`RecordSource`'s example in the stored crop's pixels (image,
  landmarks, box; ``name`` the stored image name); the transforms draw from it the crops they
  would draw from the photo (``msm_jax/data/tfds/crops.py``). The split is opened on first use
  in each process: Grain's worker processes unpickle the source unopened.

  Args:
    name: "builder/config", e.g. "msm_300w/crop256".
    split: the TFDS split.
    data_dir: the folder the dataset was built into.
    indices: the split's faces this source holds, in order (None: all).
  """

  def __init__(self, name: str, split: str, data_dir: str, indices=None):
    self._name, self._split, self._data_dir = name, split, data_dir
    self._indices = None if indices is None else np.asarray(indices, np.int64)
    self._faces = None

  def __getstate__(self) -> dict:
    return {**self.__dict__, "_faces": None}

  def _opened(self):
    if self._faces is None:
      self._faces = reading.open_split(self._name, self._split, self._data_dir)
    return self._faces

  def __len__(self) -> int:
    return len(self._opened()) if self._indices is None else len(self._indices)

  def _position(self, index: int) -> int:
    if not 0 <= index < len(self):
      raise IndexError(f"PreparedSource index {index} outside [0, {len(self)})")
    return int(index) if self._indices is None else int(self._indices[index])

  def stored(self, index: int) -> dict:
    """Face ``index`` as stored: the image still encoded, ``crop_to_image`` included."""
    return self._opened()[self._position(index)]

  def __getitem__(self, index: int) -> dict:
    face = self.stored(index)
    name = face["name"].decode()
    where = f"{self._name} {self._split}[{self._position(index)}] ({name})"
    image = reading.decode_image(face["image"], where)
    return _example(index, name, image, face["landmarks"], face["occluded"], face["box"])

  def subset(self, indices) -> PreparedSource:
    """The faces ``indices`` of this source, in that order."""
    positions = [self._position(int(index)) for index in indices]
    return PreparedSource(self._name, self._split, self._data_dir, positions)

  def names(self) -> list[str]:
    """Every face's stored image name, in source order (decodes no image)."""
    return [self.stored(index)["name"].decode() for index in range(len(self))]

  def image_landmarks(self, count: int | None = None) -> np.ndarray:
    """[N, L, 2] float32 landmarks of the first ``count`` faces in their photos' pixels."""
    faces = [self.stored(index) for index in range(len(self) if count is None else count)]
    return np.stack(
      [
        geometry.apply_affine(face["landmarks"].astype(np.float64), face["crop_to_image"])
        for face in faces
      ]
    ).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SchemeTables:
  """What the transforms need of the landmark scheme, as plain tuples (cheap to pickle)."""

  flip_permutation: tuple[int, ...]
  anchors: stgan_pairs.CanonicalAnchors

  @classmethod
  def from_name(cls, name) -> SchemeTables:
    scheme = get_scheme(name)
    return cls(tuple(scheme.flip_permutation), stgan_pairs.CanonicalAnchors.from_scheme(scheme))


def _check_num_points(example, tables: SchemeTables):
  num_points = example["landmarks"].shape[0]
  if num_points != len(tables.flip_permutation):
    raise ValueError(
      f"{example['name']} (face {example['index']}) has {num_points} landmarks but the "
      f"scheme has {len(tables.flip_permutation)}: config.data.scheme does not match the data"
    )


_CROP_BOXES = ("landmarks", "record")


def _check_crop_box(crop_box: str):
  if crop_box not in _CROP_BOXES:
    raise ValueError(f"crop_box must be one of {_CROP_BOXES}, got {crop_box!r}")


def _crop_box(example, crop_box: str):
  return box_from_landmarks(example["landmarks"]) if crop_box == "landmarks" else example["box"]


def _name_the_face(example, error: ValueError):
  """Re-raise a transform's ValueError with the face it happened on."""
  raise ValueError(f"{example['name']} (face {example['index']}): {error}") from error


@dataclasses.dataclass(frozen=True)
class HourglassTrainTransform(grain.transforms.RandomMap):
  """Raw example -> augmented hourglass example (``augment.augment_face``).

  ``crop_box``: "landmarks" (the ground-truth box, Sec. IV-C) or "record" (the
  source's box, e.g. a detector's).
  """

  crop_size: int
  box_margin: float
  options: augment.AugmentOptions
  tables: SchemeTables
  crop_box: str = "landmarks"
  # (field, ((epoch, value), ...)) pairs: `augment.scheduled_options` at the example's epoch.
  schedule: tuple = ()

  def __post_init__(self):
    _check_crop_box(self.crop_box)
    augment.check_schedule(self.schedule)

  def random_map(self, example, rng: np.random.Generator) -> dict:
    _check_num_points(example, self.tables)
    options = augment.scheduled_options(self.options, self.schedule, example.get("epoch", 0.0))
    try:
      face = augment.augment_face(
        example["image"],
        example["landmarks"],
        example["occluded"],
        _crop_box(example, self.crop_box),
        rng,
        crop_size=self.crop_size,
        margin=self.box_margin,
        options=options,
        flip_permutation=self.tables.flip_permutation,
      )
    except ValueError as error:
      _name_the_face(example, error)
    return {
      "images": face["image"],
      "landmarks": face["landmarks"],
      "visible": face["visible"],
      "occluded": face["occluded"],
      "index": np.int32(example["index"]),
    }


@dataclasses.dataclass(frozen=True)
class StganTrainTransform(grain.transforms.RandomMap):
  """Raw example -> (I_fake, I_real, theta*) (``stgan_pairs.make_stgan_pair``)."""

  options: stgan_pairs.StganPairOptions
  tables: SchemeTables

  def random_map(self, example, rng: np.random.Generator) -> dict:
    _check_num_points(example, self.tables)
    try:
      pair = stgan_pairs.make_stgan_pair(
        example["image"],
        example["landmarks"],
        example["box"],
        rng,
        options=self.options,
        anchors=self.tables.anchors,
        flip_permutation=self.tables.flip_permutation,
      )
    except ValueError as error:
      _name_the_face(example, error)
    return {
      "fake": pair["fake"],
      "real": pair["real"],
      "theta": pair["theta"],
      # For the joint stage (the ST-GAN ignores them): I_fake's landmarks, crop pixels.
      "landmarks": pair["fake_landmarks"],
      "visible": augment.inside_crop(pair["fake_landmarks"], self.options.crop_size),
      "index": np.int32(example["index"]),
    }


@dataclasses.dataclass(frozen=True)
class EvalTransform(grain.transforms.Map):
  """Raw example -> un-augmented crop with what is needed to map predictions back."""

  crop_size: int
  box_margin: float
  crop_box: str = "record"

  def __post_init__(self):
    _check_crop_box(self.crop_box)

  def map(self, example) -> dict:
    try:
      matrix = augment.face_crop_matrix(
        _crop_box(example, self.crop_box), self.crop_size, self.box_margin
      )
      crop = augment.warp_image(example["image"], matrix, self.crop_size)
    except ValueError as error:
      _name_the_face(example, error)
    crop_landmarks = geometry.apply_affine(example["landmarks"].astype(np.float64), matrix)
    return {
      "images": crop,
      "landmarks": crop_landmarks.astype(np.float32),
      "visible": augment.inside_crop(crop_landmarks, self.crop_size),
      "occluded": example["occluded"],
      "crop_matrix": matrix.astype(np.float32),
      "image_landmarks": example["landmarks"],
      "index": np.int32(example["index"]),
    }


def _ensure_absl_flags_parsed():
  """Grain's worker start-up reads its absl flags; outside ``app.run`` use their defaults."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _finish(
  dataset: grain.MapDataset,
  *,
  batch_size: int,
  drop_remainder: bool,
  worker_count: int,
  prefetch: int,
) -> grain.IterDataset:
  """MapDataset of examples -> worker processes -> batches."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if worker_count < 0:
    raise ValueError(f"worker_count must be >= 0, got {worker_count}")
  buffered = max(1, prefetch) * batch_size
  # Threads overlap image decoding (PIL releases the GIL); a worker process
  # already has its own core, so it reads with one thread.
  read_options = grain.ReadOptions(
    num_threads=1 if worker_count else 2, prefetch_buffer_size=buffered
  )
  examples = dataset.to_iter_dataset(read_options)
  if worker_count:
    _ensure_absl_flags_parsed()
    examples = examples.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=buffered)
    )
  return examples.batch(batch_size, drop_remainder=drop_remainder)


@dataclasses.dataclass(frozen=True)
class AttachEpoch(grain.transforms.MapWithIndex):
  """Adds ``epoch``: how many epochs of this host's slice came before the example (a float),
  which the augmentation schedule reads. Positions count across epochs, so a resumed iterator
  continues the schedule where it stopped."""

  epoch_length: int

  def map_with_index(self, index: int, example):
    if example is None:  # a skipped bad sample
      return None
    return {**example, "epoch": index / self.epoch_length}


def _training_dataset(
  source,
  transform,
  *,
  batch_size: int,
  seed: int,
  num_epochs,
  worker_count: int,
  prefetch: int,
  shard_index: int,
  shard_count: int,
) -> grain.IterDataset:
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
  dataset = grain.MapDataset.source(source).seed(seed).shuffle()
  # Slicing after the shuffle gives each host a disjoint part of every epoch.
  dataset = dataset[shard_index::shard_count]
  if len(dataset) < batch_size:
    raise ValueError(f"{len(dataset)} faces per shard cannot fill one batch of {batch_size}")
  # repeat reseeds the shuffle and the random_map per epoch. The augmentation's RNG is seeded
  # by the position within this host's slice, so each host needs its own seed, or the k-th
  # face of every host would get the same rotation, flip and jitter.
  augmentation_seed = None if shard_count == 1 else seed * 1_000_003 + shard_index
  epoch_length = len(dataset)
  dataset = dataset.repeat(num_epochs).map_with_index(AttachEpoch(epoch_length))
  dataset = dataset.random_map(transform, seed=augmentation_seed)
  return _finish(
    dataset,
    batch_size=batch_size,
    drop_remainder=True,
    worker_count=worker_count,
    prefetch=prefetch,
  )


def augmentation_schedule(augment_config) -> tuple:
  """``config.augment.schedule`` (field -> ((epoch, value), ...)) as a hashable tuple."""
  schedule = augment_config.get("schedule", None) or {}
  return tuple(
    (field, tuple((float(epoch), float(value)) for epoch, value in knots))
    for field, knots in sorted(dict(schedule).items())
  )


def hourglass_train_dataset(
  source,
  config,
  *,
  seed: int | None = None,
  num_epochs=None,
  crop_box: str = "landmarks",
  worker_count: int | None = None,
  shard_index: int = 0,
  shard_count: int = 1,
) -> grain.IterDataset:
  """Augmented crops for the stacked hourglass (Sec. III-B, IV-C).

  Args:
    source: random access examples (:class:`RecordSource`, ``SyntheticSource``).
    config: the experiment ConfigDict (``data``, ``augment``, ``hourglass.batch_size``).
    seed: defaults to ``config.seed``.
    num_epochs: None repeats forever (each epoch reshuffled).
    crop_box: "landmarks" (ground-truth box, the paper) or "record".
    worker_count: defaults to ``config.data.worker_count``.
    shard_index, shard_count: this host's slice of every epoch.
  Returns:
    ``grain.IterDataset`` of hourglass batches (see the module docstring).
  """
  transform = HourglassTrainTransform(
    crop_size=int(config.data.crop_size),
    box_margin=float(config.data.box_margin),
    options=augment.AugmentOptions.from_config(config.augment),
    tables=SchemeTables.from_name(config.data.scheme),
    crop_box=crop_box,
    schedule=augmentation_schedule(config.augment),
  )
  return _training_dataset(
    source,
    transform,
    batch_size=int(config.hourglass.batch_size),
    seed=config.seed if seed is None else seed,
    num_epochs=num_epochs,
    worker_count=config.data.worker_count if worker_count is None else worker_count,
    prefetch=int(config.data.prefetch),
    shard_index=shard_index,
    shard_count=shard_count,
  )


def stgan_train_dataset(
  source,
  config,
  *,
  seed: int | None = None,
  num_epochs=None,
  worker_count: int | None = None,
  shard_index: int = 0,
  shard_count: int = 1,
  batch_size: int | None = None,
) -> grain.IterDataset:
  """(I_fake, I_real, theta*) batches for the ST-GAN (Sec. III-A, IV-C, Algorithm 1), with
  I_fake's landmarks and their visibility (the joint stage's targets).

  Arguments as :func:`hourglass_train_dataset`; the batch size defaults to
  ``config.stgan.batch_size`` and I_fake is cropped from the source's box.
  """
  transform = StganTrainTransform(
    options=stgan_pairs.StganPairOptions.from_config(config),
    tables=SchemeTables.from_name(config.data.scheme),
  )
  return _training_dataset(
    source,
    transform,
    batch_size=int(config.stgan.batch_size if batch_size is None else batch_size),
    seed=config.seed if seed is None else seed,
    num_epochs=num_epochs,
    worker_count=config.data.worker_count if worker_count is None else worker_count,
    prefetch=int(config.data.prefetch),
    shard_index=shard_index,
    shard_count=shard_count,
  )


def eval_dataset(
  source, config, *, batch_size: int, crop_box: str = "record", worker_count: int | None = None
) -> grain.IterDataset:
  """One pass over ``source`` in order, no augmentation, the remainder kept.

  Args:
    source: random access examples.
    config: the experiment ConfigDict (``data.crop_size``, ``data.box_margin``).
    batch_size: faces per batch (the last batch may be smaller).
    crop_box: "record" (the source's box: what the full model starts from) or
      "landmarks" (the ground-truth box, to evaluate the hourglass alone).
    worker_count: defaults to ``config.data.worker_count``.
  Returns:
    ``grain.IterDataset`` of evaluation batches (see the module docstring).
  """
  transform = EvalTransform(
    crop_size=int(config.data.crop_size),
    box_margin=float(config.data.box_margin),
    crop_box=crop_box,
  )
  dataset = grain.MapDataset.source(source).map(transform)
  return _finish(
    dataset,
    batch_size=batch_size,
    drop_remainder=False,
    worker_count=config.data.worker_count if worker_count is None else worker_count,
    prefetch=int(config.data.prefetch),
  )

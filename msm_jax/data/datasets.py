"""From `config.data` to data sources: which faces train, validate and evaluate each run.

`config.data.dataset` (and `data.eval_dataset`, when evaluating on another one) names an
entry of `DATASETS`: its readers, whether its faces carry occlusion flags, which paper tables
apply. The returned sources are the random-access objects of `input_pipeline`
(`RecordSource`, `SyntheticSource`).

  synthetic  train / test (no occluders) / occluded_test (every face occluded), disjoint
             face-index ranges of one seeded generator; no download
  300w       `read_300w(root, split)`; eval splits common / challenge / full / private
  wflw       `read_wflw(root, "train")`; eval: the test set and its six attribute subsets
  cofw       COFW-29: `read_cofw(root, "train")`; eval: its test set
  cofw68     the COFW-68 test set (`data.eval_root`), evaluation only (the paper's Table V)
  menpo      Menpo 2D semi-frontal faces (`read_menpo`), one folder
  folder     any folder of images + .pts (`read_pts_folder`); subset name = folder name

A new dataset is one `register` call (README, "Extending msm-jax").

`config.data.source` says where the faces of a real dataset are read (`DATA_SOURCES`):
"folder", the official release under `data.root`, each photo decoded per face; or "tfds", the
dataset prepared once as face crops (`msm_jax/data/tfds`, docs/tfds.md) in `data.tfds_data_dir`,
read through `tfds.data_source`. Both give the pipeline the same examples up to the similarity
of the stored crop, so the same transforms follow either.

A validation split is carved off the training faces by image, so it never overlaps
training: either the images named in `data.validation_list` (a text file, one image path
per line relative to `data.root`), or a seeded `data.validation_fraction` of them.
"""

import dataclasses
import os
import warnings
from typing import Callable, NamedTuple

import numpy as np

from msm_jax.data import cofw, synthetic, w300, wflw
from msm_jax.data.input_pipeline import PreparedSource, RecordSource, SyntheticSource
from msm_jax.data.tfds import crops, reading

SYNTHETIC_SPLITS = ("train", "validation", "test", "occluded_test")


def synthetic_config(config, split: str = "train") -> synthetic.SyntheticConfig:
  """The SyntheticConfig of a split: the test split has no occluders, occluded_test always has."""
  fields = dict(config.data.synthetic.to_dict())
  if split in ("test", "validation"):
    fields["occlusion_prob"] = 0.0
  elif split == "occluded_test":
    fields["occlusion_prob"] = 1.0
  return synthetic.SyntheticConfig.from_mapping(fields)


def _synthetic_ranges(config) -> dict:
  """Disjoint face-index ranges of the synthetic splits, in the order of SYNTHETIC_SPLITS."""
  sizes = {
    "train": config.data.train_size,
    "validation": config.data.validation_size,
    "test": config.data.test_size,
    "occluded_test": config.data.test_size,
  }
  ranges, start = {}, 0
  for split in SYNTHETIC_SPLITS:
    ranges[split] = (start, int(sizes[split]))
    start += int(sizes[split])
  return ranges


def synthetic_source(config, split: str) -> SyntheticSource:
  first, count = _synthetic_ranges(config)[split]
  return SyntheticSource(config.seed, count, synthetic_config(config, split), first_index=first)


def _require_root(config, field: str = "root") -> str:
  root = config.data.get(field, "")
  if not root:
    raise ValueError(
      f"config data.{field} is empty: point it at the dataset's release folder, "
      f"e.g. --config.data.{field}=/data/300W"
    )
  if not os.path.isdir(root):
    raise FileNotFoundError(f"config data.{field}={root!r} is not a folder")
  return root


def read_training_records(config) -> list:
  """The training faces of a real dataset (before the validation carve-out)."""
  dataset = dataset_of(config.data.dataset)
  if dataset.train_records is None:
    trainable = ", ".join(name for name, d in DATASETS.items() if d.train_records or d.sources)
    raise ValueError(
      f"config data.dataset={config.data.dataset!r} is not a training set: choose {trainable}"
    )
  return dataset.train_records(config)


def split_validation(records: list, fraction: float, seed: int) -> tuple[list, list]:
  """(train, validation): a seeded split by image, so two faces of one photo stay together."""
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"config data.validation_fraction={fraction}: must be in [0, 1)")
  if fraction == 0.0:
    return list(records), []
  images = sorted({record.source for record in records})
  rng = np.random.default_rng(seed)
  chosen = set(rng.choice(images, size=max(1, round(fraction * len(images))), replace=False))
  train = [record for record in records if record.source not in chosen]
  validation = [record for record in records if record.source in chosen]
  return train, validation


def read_validation_list(path: str) -> list[str]:
  """Image paths (relative, "/"-separated) of a validation list file; blank lines and lines
  starting with # are ignored."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config data.validation_list={path!r}: file not found")
  with open(path, encoding="utf-8") as file:
    lines = [line.strip() for line in file]
  names = [line for line in lines if line and not line.startswith("#")]
  if not names:
    raise ValueError(f"{path}: no image paths listed")
  return names


def split_validation_by_list(
  records: list, names: list[str], root: str, list_path: str
) -> tuple[list, list]:
  """(train, validation): the faces of the listed images (paths relative to ``root``) validate.

  Every listed image must be among the records, so a typo or a missing folder is an error
  naming the list file, not a silently smaller validation split."""

  def relative(record):
    return os.path.relpath(record.source, root).replace(os.sep, "/")

  listed = set(names)
  validation = [record for record in records if relative(record) in listed]
  missing = sorted(listed - {relative(record) for record in validation})
  if missing:
    raise ValueError(
      f"{list_path}: {len(missing)} listed image(s) are not among the training "
      f"faces under {root}, e.g. {missing[:3]}"
    )
  train = [record for record in records if relative(record) not in listed]
  return train, validation


def split_records(config, records: list) -> tuple[list, list]:
  """(train, validation) records as the config says (`data.validation_list` or
  `data.validation_fraction`)."""
  list_path = config.data.get("validation_list", "")
  if list_path:
    return split_validation_by_list(
      records, read_validation_list(list_path), _require_root(config), list_path
    )
  return split_validation(records, float(config.data.validation_fraction), config.seed)


def train_and_validation_sources(config):
  """(train source, validation source or None) for the configured dataset."""
  dataset = dataset_of(config.data.dataset)
  if dataset.sources is not None:
    return dataset.sources(config)
  return source_kind(config).training(config, dataset)


def _folder_training(config, dataset):
  train, validation = split_records(config, read_training_records(config))
  skip = bool(config.data.skip_bad_samples)
  return (RecordSource(train, skip), RecordSource(validation, skip) if validation else None)


def pts_folders(root: str) -> list[str]:
  """`root` itself if it holds .pts files, else every folder below it that does (sorted)."""
  found = []
  for folder, _, files in os.walk(root):
    if any(name.lower().endswith(".pts") for name in files):
      found.append(folder)
      if folder == root:
        return [root]
  if not found:
    raise FileNotFoundError(f"no .pts files in {root} or below it")
  return sorted(found)


def eval_sources(config) -> dict:
  """{subset name: source} for evaluation; subsets whose folders are absent are left out.

  The split name "validation" means the seeded split carved off the training faces.
  """
  dataset = evaluation_dataset(config)  # checked before the (slow) validation split is read
  splits = tuple(config.data.eval_splits)
  sources = {}
  if "validation" in splits:
    _, validation = train_and_validation_sources(config)
    if validation is None:
      raise ValueError(
        "eval split 'validation' needs data.validation_fraction > 0 "
        "(or data.validation_size for synthetic data)"
      )
    sources["validation"] = validation
    splits = tuple(split for split in splits if split != "validation")
  if dataset.sources is not None:  # generated faces: nothing is read from a folder
    sources.update(dataset.eval_sources(config, splits))
  elif dataset.prepared is None:  # a folder of photos by nature ("folder"): read as one
    sources.update(DATA_SOURCES["folder"].evaluation(config, dataset, splits))
  else:
    sources.update(source_kind(config).evaluation(config, dataset, splits))
  if not sources:
    raise ValueError(f"no evaluation subsets found for data.eval_splits={config.data.eval_splits}")
  return sources


# --- the registry: one entry per value of config.data.dataset / data.eval_dataset -------------


@dataclasses.dataclass(frozen=True)
class Prepared:
  """Where a dataset's faces are once prepared as face crops (`msm_jax/data/tfds`).

  builder: the TFDS builder's registered name (`builders.BUILDERS`).
  train_split(config) -> the split training reads, or None: not a training set.
  eval_splits(config, subset names) -> {subset name: split}.
  box_source(config) -> the boxes its training split was read with (the builder config's).
  """

  builder: str
  eval_splits: Callable
  train_split: Callable | None = None
  box_source: Callable = lambda config: reading.BOX_SOURCE_DEFAULT


@dataclasses.dataclass(frozen=True)
class Dataset:
  """What a dataset name means.

  train_records(config) -> [FaceRecord] (before the validation carve-out), or None: not a
    training set. sources(config) -> (train, validation) replaces it where faces are not
    records (the synthetic generator).
  eval_sources(config, splits) -> {subset name: source}.
  occlusion_flags: its evaluation faces carry per-landmark occlusion flags (the occluded vs
    visible NME table, the precision / recall of "unreliable").
  paper_tables: the key of the paper's tables for it (`reports.paper_reference`: "300w",
    "cofw", "wflw"), or None.
  prepared: its prepared face crops (`data.source = "tfds"`), or None: folder only.
  """

  eval_sources: Callable
  train_records: Callable | None = None
  sources: Callable | None = None
  occlusion_flags: bool = False
  paper_tables: str | None = None
  prepared: Prepared | None = None


def _skip(config) -> bool:
  return bool(config.data.skip_bad_samples)


def _300w_train(config) -> list:
  return w300.read_300w(
    _require_root(config),
    config.data.train_split,
    box_source=config.data.box_source,
    skip_bad=_skip(config),
  )


def _300w_eval(config, splits) -> dict:
  root, sources = _require_root(config), {}
  for split in splits:
    try:
      sources[split] = RecordSource(
        w300.read_300w(root, split, skip_bad=_skip(config)), _skip(config)
      )
    except FileNotFoundError as error:
      warnings.warn(f"300-W split {split!r} left out of the evaluation: {error}")
  return sources


def _wflw_eval(config, splits) -> dict:
  subsets = wflw.wflw_subsets(wflw.read_wflw(_require_root(config), "test", skip_bad=_skip(config)))
  return {name: RecordSource(subsets[name], _skip(config)) for name in splits if subsets.get(name)}


def _cofw_eval(config, splits) -> dict:
  records = cofw.read_cofw(_eval_root(config), "test", skip_bad=_skip(config))
  return {"test": RecordSource(records, _skip(config))}


def _cofw68_eval(config, splits) -> dict:
  records = cofw.read_cofw68(_require_root(config, "eval_root"), skip_bad=_skip(config))
  return {"test": RecordSource(records, _skip(config))}


def _eval_root(config) -> str:
  return _require_root(config, "eval_root" if config.data.get("eval_root", "") else "root")


def _folder_eval(config, splits) -> dict:
  """Any folder of images + .pts, or a tree of them (e.g. a 300-W-layout folder): one subset
  per folder, named by its path below the root."""
  root, sources = os.path.normpath(_eval_root(config)), {}
  for folder in pts_folders(root):
    name = os.path.relpath(folder, os.path.dirname(root) if folder == root else root)
    records = w300.read_pts_folder(folder, subset=name, skip_bad=_skip(config))
    sources[name] = RecordSource(records, _skip(config))
  return sources


def _synthetic_sources(config):
  validation = synthetic_source(config, "validation") if config.data.validation_size else None
  return synthetic_source(config, "train"), validation


def _same_names(config, splits) -> dict:
  return {split: split for split in splits}


def _wflw_prepared_splits(config, splits) -> dict:
  # The whole test set is the "full" subset of `wflw.wflw_subsets`, the split "test".
  return {name: "test" if name == "full" else name for name in splits}


DATASETS: dict[str, Dataset] = {
  "synthetic": Dataset(
    eval_sources=lambda config, splits: {
      split: synthetic_source(config, split) for split in splits
    },
    sources=_synthetic_sources,
    occlusion_flags=True,
  ),
  "300w": Dataset(
    eval_sources=_300w_eval,
    train_records=_300w_train,
    paper_tables="300w",
    prepared=Prepared(
      "msm_300w",
      eval_splits=_same_names,
      train_split=lambda config: config.data.train_split,
      box_source=lambda config: config.data.box_source,
    ),
  ),
  "wflw": Dataset(
    eval_sources=_wflw_eval,
    train_records=lambda config: wflw.read_wflw(
      _require_root(config), "train", skip_bad=_skip(config)
    ),
    paper_tables="wflw",
    prepared=Prepared(
      "msm_wflw", eval_splits=_wflw_prepared_splits, train_split=lambda config: "train"
    ),
  ),
  # COFW-29 (Burgos-Artizzu et al.): train on its 1,345 faces, test on its 507.
  "cofw": Dataset(
    eval_sources=_cofw_eval,
    train_records=lambda config: cofw.read_cofw(
      _require_root(config), "train", skip_bad=_skip(config)
    ),
    occlusion_flags=True,
    prepared=Prepared(
      "msm_cofw",
      eval_splits=lambda config, splits: {"test": "test"},
      train_split=lambda config: "train",
    ),
  ),
  # The paper's COFW protocol (Table V, VIII): the 507 test faces with 68 points; test only.
  "cofw68": Dataset(
    eval_sources=_cofw68_eval,
    occlusion_flags=True,
    paper_tables="cofw",
    prepared=Prepared("msm_cofw68", eval_splits=lambda config, splits: {"test": "test"}),
  ),
  # Menpo 2D semi-frontal faces (68 points; the paper's shape dictionary source).
  "menpo": Dataset(
    eval_sources=lambda config, splits: {
      "menpo": RecordSource(
        w300.read_menpo(_eval_root(config), skip_bad=_skip(config)), _skip(config)
      )
    },
    train_records=lambda config: w300.read_menpo(_require_root(config), skip_bad=_skip(config)),
    prepared=Prepared(
      "msm_menpo",
      eval_splits=lambda config, splits: {"menpo": "train"},
      train_split=lambda config: "train",
    ),
  ),
  "folder": Dataset(
    eval_sources=_folder_eval,
    train_records=lambda config: w300.read_pts_folder(
      _require_root(config), skip_bad=_skip(config)
    ),
  ),
}


def register(name: str, dataset: Dataset) -> None:
  """Make ``name`` a value of ``config.data.dataset`` (and ``data.eval_dataset``)."""
  if name in DATASETS:
    raise ValueError(f"dataset {name!r} is already registered")
  DATASETS[name] = dataset


def dataset_of(name: str, field: str = "dataset") -> Dataset:
  if name not in DATASETS:
    raise ValueError(f"config data.{field}={name!r}: expected one of {', '.join(DATASETS)}")
  return DATASETS[name]


def evaluation_dataset(config) -> Dataset:
  """The registry entry of the evaluated dataset (data.eval_dataset, else data.dataset)."""
  return dataset_of(config.data.get("eval_dataset", "") or config.data.dataset, "eval_dataset")


def training_shapes(config, source, limit: int | None = None) -> np.ndarray:
  """[N, L, 2] training landmarks (image pixels): the shape dictionary's (Sec. IV-C) and
  the ST template's; ``limit`` keeps the first faces only."""
  count = len(source) if limit is None else min(len(source), limit)
  if isinstance(source, SyntheticSource):
    # Rendering is the only way to a synthetic face's landmarks (~3 ms a face).
    return np.stack([source[index]["landmarks"] for index in range(count)])
  if isinstance(source, PreparedSource):  # stored in crop pixels, with the way back
    return source.image_landmarks(count)
  return np.stack([record.landmarks for record in source.records[:count]])


# --- where the faces of a real dataset are read: config.data.source ----------------------------


@dataclasses.dataclass(frozen=True)
class SourceKind:
  """training(config, dataset) -> (train source, validation source or None);
  evaluation(config, dataset, subset names) -> {subset name: source}."""

  training: Callable
  evaluation: Callable


class _NamedFace(NamedTuple):
  """A stored face as the validation split sees it (`split_validation` groups by `source`)."""

  index: int
  source: str


def prepared_name(config, dataset: Dataset) -> str:
  """The "builder/config" a config reads of a dataset's prepared crops."""
  if dataset.prepared is None:
    named = next(name for name, entry in DATASETS.items() if entry is dataset)
    prepared = ", ".join(name for name, entry in DATASETS.items() if entry.prepared)
    raise ValueError(
      f"config data.source='tfds': dataset {named!r} has no prepared form; prepared datasets: "
      f"{prepared} (or data.source='folder')"
    )
  box_source = dataset.prepared.box_source(config)
  return f"{dataset.prepared.builder}/{reading.config_name(config.data.crop_size, box_source)}"


def check_prepared(config, dataset: Dataset, root_field: str = "root") -> tuple:
  """("builder/config", its data folder, its `tfds.core.DatasetInfo`) after checking that it
  is built there (NotPreparedError says the build command) and serves the config's crops and
  augmentation (ValueError naming the field)."""
  name = prepared_name(config, dataset)
  directory = reading.data_dir(config.data.get("tfds_data_dir", ""))
  manual_dir = config.data.get(root_field, "") or "<the official release folder>"
  info = reading.prepared_info(name, directory, manual_dir)
  reading.check_serves(info, name, crops.config_spec(config), dataset.prepared.box_source(config))
  return name, directory, info


def split_prepared(config, source: PreparedSource) -> tuple:
  """(train, validation or None) of a prepared training split, carved as `split_records` carves
  the folder's faces: by stored image name (the image path relative to the release folder)."""
  list_path = config.data.get("validation_list", "")
  fraction = float(config.data.validation_fraction)
  if not list_path and fraction == 0.0:  # nothing to carve: no need to read every name
    return source, None
  faces = [_NamedFace(index, name) for index, name in enumerate(source.names())]
  if list_path:
    names = read_validation_list(list_path)
    train, validation = split_validation_by_list(faces, names, os.curdir, list_path)
  else:
    train, validation = split_validation(faces, fraction, config.seed)
  if not validation:
    return source, None
  indices = [[face.index for face in part] for part in (train, validation)]
  return source.subset(indices[0]), source.subset(indices[1])


def _prepared_training(config, dataset: Dataset):
  name, directory, info = check_prepared(config, dataset)
  if dataset.prepared.train_split is None:
    raise ValueError(f"config data.dataset={config.data.dataset!r} is not a training set")
  split = dataset.prepared.train_split(config)
  if split not in info.splits:
    raise ValueError(
      f"config data.dataset={config.data.dataset!r}: {name} has no training split {split!r} "
      f"(prepared: {', '.join(info.splits)})"
    )
  return split_prepared(config, PreparedSource(name, split, directory))


def _prepared_evaluation(config, dataset: Dataset, splits) -> dict:
  root_field = "eval_root" if config.data.get("eval_root", "") else "root"
  name, directory, info = check_prepared(config, dataset, root_field)
  sources = {}
  for subset, split in dataset.prepared.eval_splits(config, splits).items():
    if split in info.splits:
      sources[subset] = PreparedSource(name, split, directory)
    else:
      warnings.warn(f"{name}: split {split!r} was not prepared; left out of the evaluation")
  return sources


DATA_SOURCES: dict[str, SourceKind] = {
  "folder": SourceKind(
    training=_folder_training,
    evaluation=lambda config, dataset, splits: dataset.eval_sources(config, splits),
  ),
  "tfds": SourceKind(training=_prepared_training, evaluation=_prepared_evaluation),
}


def source_kind(config) -> SourceKind:
  """The entry of `DATA_SOURCES` that `config.data.source` names."""
  name = config.data.get("source", "folder")
  if name not in DATA_SOURCES:
    raise ValueError(f"config data.source={name!r}: expected one of {', '.join(DATA_SOURCES)}")
  return DATA_SOURCES[name]

"""From `config.data` to data sources: which faces train, validate and evaluate each run.

`config.data.dataset` picks the reader (or the synthetic generator); the returned sources
are the random-access objects of `input_pipeline` (`RecordSource`, `SyntheticSource`).

  synthetic  train / test (no occluders) / occluded_test (every face occluded), disjoint
             face-index ranges of one seeded generator; no download
  300w       `read_300w(root, split)`; eval splits common / challenge / full / private
  wflw       `read_wflw(root, "train")`; eval: the test set and its six attribute subsets
  folder     any folder of images + .pts (`read_pts_folder`); subset name = folder name
  eval_dataset = "cofw68" evaluates on the COFW-68 test set (`data.eval_root`) instead.

A validation split is carved off the training faces by image, so it never overlaps
training: either the images named in `data.validation_list` (a text file, one image path
per line relative to `data.root`), or a seeded `data.validation_fraction` of them.
"""

import os
import warnings

import numpy as np

from msm_jax.data import cofw, synthetic, w300, wflw
from msm_jax.data.input_pipeline import RecordSource, SyntheticSource

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
  dataset, skip = config.data.dataset, bool(config.data.skip_bad_samples)
  if dataset == "300w":
    return w300.read_300w(
      _require_root(config),
      config.data.train_split,
      box_source=config.data.box_source,
      skip_bad=skip,
    )
  if dataset == "wflw":
    return wflw.read_wflw(_require_root(config), "train", skip_bad=skip)
  if dataset == "folder":
    return w300.read_pts_folder(_require_root(config), skip_bad=skip)
  raise ValueError(f"config data.dataset={dataset!r}: expected synthetic, 300w, wflw or folder")


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
  if config.data.dataset == "synthetic":
    validation = synthetic_source(config, "validation") if config.data.validation_size else None
    return synthetic_source(config, "train"), validation
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
  dataset = config.data.get("eval_dataset", "") or config.data.dataset
  skip = bool(config.data.skip_bad_samples)
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
  if dataset == "synthetic":
    sources.update({split: synthetic_source(config, split) for split in splits})
  elif dataset == "cofw68":
    sources["test"] = RecordSource(
      cofw.read_cofw68(_require_root(config, "eval_root"), skip_bad=skip), skip
    )
  elif dataset == "300w":
    root = _require_root(config)
    for split in splits:
      try:
        sources[split] = RecordSource(w300.read_300w(root, split, skip_bad=skip), skip)
      except FileNotFoundError as error:
        warnings.warn(f"300-W split {split!r} left out of the evaluation: {error}")
  elif dataset == "wflw":
    subsets = wflw.wflw_subsets(wflw.read_wflw(_require_root(config), "test", skip_bad=skip))
    sources.update(
      {name: RecordSource(subsets[name], skip) for name in splits if subsets.get(name)}
    )
  elif dataset == "folder":
    # Any folder of images + .pts, or a tree of them (e.g. a 300-W-layout folder): one subset
    # per folder, named by its path below the root.
    field = "eval_root" if config.data.get("eval_root", "") else "root"
    root = os.path.normpath(_require_root(config, field))
    for folder in pts_folders(root):
      name = os.path.relpath(folder, os.path.dirname(root) if folder == root else root)
      sources[name] = RecordSource(w300.read_pts_folder(folder, subset=name, skip_bad=skip), skip)
  else:
    raise ValueError(
      f"config data.eval_dataset={dataset!r}: expected synthetic, 300w, wflw, cofw68 or folder"
    )
  if not sources:
    raise ValueError(f"no evaluation subsets found for data.eval_splits={config.data.eval_splits}")
  return sources


def training_shapes(config, source, limit: int | None = None) -> np.ndarray:
  """[N, L, 2] training landmarks (image pixels): the shape dictionary's (Sec. IV-C) and
  the ST template's; ``limit`` keeps the first faces only."""
  count = len(source) if limit is None else min(len(source), limit)
  if isinstance(source, SyntheticSource):
    # Rendering is the only way to a synthetic face's landmarks (~3 ms a face).
    return np.stack([source[index]["landmarks"] for index in range(count)])
  return np.stack([record.landmarks for record in source.records[:count]])

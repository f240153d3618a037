"""Reading a prepared dataset: which one a config reads, whether it is there and serves the
config, one split through ``tfds.data_source``, a stored crop decoded (docs/tfds.md).

Reading needs no TensorFlow: ArrayRecord files and ``tfds.data_source``'s NumPy decoding. The
stored image is left encoded by TFDS and decoded here with OpenCV (the same pixels as PIL's
decoder, and faster: decoding is most of a prepared face's cost, `docs/performance.md`), so a
damaged record is an error naming the face. ``tensorflow_datasets`` (and the
builders, which register the names) are imported by the functions that open a dataset:
importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
import shlex

import cv2
import numpy as np

from msm_jax.data.images import ImageReadError
from msm_jax.data.tfds import crops

_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
BOX_SOURCE_DEFAULT = "landmarks"


class NotPreparedError(FileNotFoundError):
  """The prepared dataset a config reads is not in its data folder; the message says the
  command that builds it."""


def config_name(crop_size: int, box_source: str = BOX_SOURCE_DEFAULT) -> str:
  """The builder config a training config reads: ``crop<S>``, with ``_<box source>`` for
  faces whose training boxes are not the landmarks' (300-W's official boxes)."""
  suffix = "" if box_source == BOX_SOURCE_DEFAULT else f"_{box_source}"
  return f"crop{int(crop_size)}{suffix}"


def data_dir(configured: str) -> str:
  """``config.data.tfds_data_dir``, or TFDS's default ($TFDS_DATA_DIR, ~/tensorflow_datasets)."""
  if configured:
    return os.path.expanduser(configured)
  from tensorflow_datasets.core import constants

  return constants.get_default_data_dir()


# The builder configs every builder defines (builders.BUILDER_CONFIGS); others build from JSON.
STANDARD_CONFIGS = ("crop256", "crop128")


def build_command(name: str, directory: str, manual_dir: str) -> str:
  """The command that prepares ``name`` ("builder/config") into ``directory``."""
  builder, config = name.split("/")
  if config not in STANDARD_CONFIGS:
    size, _, box_source = config.removeprefix("crop").partition("_")
    fields = {"name": config, "crop_size": int(size)}
    config = json.dumps({**fields, "box_source": box_source} if box_source else fields)
  arguments = ("--config", config, "--manual_dir", manual_dir, "--data_dir", directory)
  return " ".join(["python -m msm_jax.data.tfds build", builder, *map(shlex.quote, arguments)])


def prepared_info(name: str, directory: str, manual_dir: str):
  """The ``tfds.core.DatasetInfo`` of a prepared dataset ("builder/config"); NotPreparedError
  (saying what to run) when it has not been built into ``directory``."""
  import tensorflow_datasets as tfds

  from msm_jax.data.tfds import builders  # noqa: F401 -- registers the msm_* names

  try:
    builder = tfds.builder(name, data_dir=directory)
  except ValueError:  # a config the builder does not define, never built from JSON here
    builder = None
  if builder is None or not builder.is_prepared():
    raise NotPreparedError(
      f"the prepared dataset {name} is not in {directory}: run "
      f"`{build_command(name, directory, manual_dir)}`"
    )
  return builder.info


def check_serves(info, name: str, wanted: crops.CropSpec, box_source: str) -> None:
  """ValueError (one line, naming the config field) unless the crops of ``info`` were built
  for ``box_source`` boxes and cover every training crop of ``wanted``."""
  metadata = info.metadata or {}
  built_box_source = metadata.get("box_source", BOX_SOURCE_DEFAULT)
  if built_box_source != box_source:
    raise ValueError(
      f"config data.box_source={box_source!r}: {name} was built with {built_box_source!r} boxes"
    )
  if str(info.file_format.value) != "array_record":
    raise ValueError(f"{name} is stored as {info.file_format.value}: rebuild it as array_record")
  crops.check_serves(crops.CropSpec(**metadata["crop"]), wanted, name)


def open_split(name: str, split: str, directory: str):
  """Random access to one prepared split: ``tfds.data_source`` with the image left encoded."""
  import tensorflow_datasets as tfds

  from msm_jax.data.tfds import builders  # noqa: F401 -- registers the msm_* names

  return tfds.data_source(
    name,
    split=split,
    data_dir=directory,
    download=False,
    decoders={"image": tfds.decode.SkipDecoding()},
  )


def decode_image(data: bytes, what: str) -> np.ndarray:
  """A stored crop: [H, W, 3] uint8 RGB; ImageReadError naming ``what`` when it cannot be read.

  OpenCV decodes a JPEG cut short as far as it goes, with a warning only: one without its
  end-of-image marker is refused here instead."""
  data = bytes(data)
  if data[:2] == _JPEG_START and data.rstrip(b"\0")[-2:] != _JPEG_END:
    raise ImageReadError(what, "the JPEG is cut short (no end-of-image marker)")
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
  if image is None:
    raise ImageReadError(what, "not a JPEG or PNG image")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

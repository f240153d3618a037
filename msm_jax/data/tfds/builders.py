"""TensorFlow Datasets builders of the face datasets, as stored face crops (docs/tfds.md).

One ``tfds.core.GeneratorBasedBuilder`` per dataset of ``msm_jax/data/datasets.py``; each
reads the official release from ``--manual_dir`` with the library's own reader
(``w300.py``, ``wflw.py``, ``cofw.py``) and writes, per face, the stored crop of
``crops.stored_face`` as ArrayRecord, in the reader's order (split index k is the reader's
face k, as the folder source numbers it):

  image          the stored crop, JPEG (quality 95) or PNG
  landmarks      [L, 2] float32, stored crop pixels
  box            [4] float32, the record's face box in those pixels
  occluded       [L] bool, the dataset's occlusion flags (all False where it has none)
  name           the image path relative to the release folder (faces of one photo share
                 it); for images inside an annotation file (COFW), subset/face number
  crop_to_image  [3, 3] float64, stored crop -> photo pixels

    name         splits
    msm_300w     train, common, challenge, full, private (the ones present)
    msm_wflw     train, test and its six attribute subsets
    msm_cofw     train, test (29 points, occlusion flags)
    msm_cofw68   test (the COFW test faces with 68 points and flags)
    msm_menpo    train (the 68-point semi-frontal faces)

Each has the configs ``crop256`` and ``crop128`` (``FaceCropConfig``: the largest training
crop and augmentation served; the augmentation of ``configs/recipe.py`` at its widest, which
covers ``configs/base.py`` and the ST-GAN's perturbations). Building needs no TensorFlow
(the crops arrive encoded; ``python -m msm_jax.data.tfds build`` runs ``tfds build``'s code).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from msm_jax.data import cofw, w300, wflw
from msm_jax.data.images import record_image
from msm_jax.data.tfds import crops

_logger = logging.getLogger(__name__)

PREPARED_VERSION = "1.0.0"
JPEG_QUALITY = 95


def _encoded(image: np.ndarray, **save_options) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, **save_options)
  return buffer.getvalue()


# Encoded with PIL, so that TFDS only stores bytes (its own encoder runs TensorFlow).
IMAGE_ENCODERS = {
  "jpeg": lambda image: _encoded(image, format="JPEG", quality=JPEG_QUALITY),
  "png": lambda image: _encoded(image, format="PNG"),
}


@dataclasses.dataclass(kw_only=True)
class FaceCropConfig(tfds.core.BuilderConfig):
  """A prepared dataset's build parameters (``crops.CropSpec``'s, plus the image encoding and,
  for 300-W's training split, the reader's ``box_source``). A custom one from the command line:
  ``--config '{"name": "crop192", "crop_size": 192}'``."""

  crop_size: int = 256
  box_margin: float = 1.25
  rotation_degrees: float = 30.0
  scale: float = 0.2
  translation: float = 0.1
  image_format: str = "jpeg"
  box_source: str = "landmarks"

  def __post_init__(self):
    if self.image_format not in IMAGE_ENCODERS:
      raise ValueError(
        f"builder config {self.name}: image_format={self.image_format!r}, expected one of "
        f"{', '.join(IMAGE_ENCODERS)}"
      )
    self.spec  # building the CropSpec checks the crop parameters

  @property
  def spec(self) -> crops.CropSpec:
    return crops.CropSpec(
      crop_size=self.crop_size,
      box_margin=self.box_margin,
      rotation_degrees=self.rotation_degrees,
      scale=self.scale,
      translation=self.translation,
    )


BUILDER_CONFIGS = [
  FaceCropConfig(name="crop256", description="256-pixel training crops (configs/recipe.py)"),
  FaceCropConfig(
    name="crop128", crop_size=128, description="128-pixel training crops (configs/base.py)"
  ),
]


def face_name(record, root: str, index: int) -> str:
  """The stored name: the image path relative to ``root`` ("/"-separated), or for pixels read
  from an annotation file, the subset and the face's number in it."""
  if record.image_path is not None:
    return os.path.relpath(record.image_path, root).replace(os.sep, "/")
  number = (record.attributes or {}).get("cofw_index", index + 1)
  return f"{record.subset}/{number}"


def features(num_points: int, image_format: str) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict(
    {
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format=image_format),
      "landmarks": tfds.features.Tensor(shape=(num_points, 2), dtype=np.float32),
      "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
      "occluded": tfds.features.Tensor(shape=(num_points,), dtype=np.bool_),
      "name": tfds.features.Text(),
      "crop_to_image": tfds.features.Tensor(shape=(3, 3), dtype=np.float64),
    }
  )


class FaceCropBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The shared body: a subclass names its dataset, its point count and ``faces(root)``
  (split -> FaceRecords, from the readers)."""

  VERSION = tfds.core.Version(PREPARED_VERSION)
  RELEASE_NOTES = {
    PREPARED_VERSION: "Face crops with margin for the augmentation, over the readers."
  }
  BUILDER_CONFIGS = BUILDER_CONFIGS
  NUM_POINTS = 68

  def __init__(self, *, file_format=None, **kwargs):
    # ArrayRecord unless told otherwise: random access, which tfds.data_source needs.
    super().__init__(file_format=file_format or "array_record", **kwargs)
    self._spec = self.builder_config.spec

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=features(self.NUM_POINTS, config.image_format),
      # Split index k is the reader's face k: the folder source's order, so one seed draws
      # the same faces and augmentations from both.
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(
        crop=config.spec.to_dict(), image_format=config.image_format, box_source=config.box_source
      ),
    )

  def faces(self, root: str) -> dict[str, list]:
    raise NotImplementedError

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    return {
      split: self._generate_examples(records, root) for split, records in self.faces(root).items()
    }

  def _generate_examples(self, records, root):
    config = self.builder_config
    encode = IMAGE_ENCODERS[config.image_format]
    for index, record in enumerate(records):
      face = crops.stored_face(record_image(record), record.landmarks, record.box, self._spec)
      occluded = record.occluded
      yield (
        index,
        {
          "image": encode(face["image"]),
          "landmarks": face["landmarks"],
          "box": face["box"],
          "occluded": np.zeros(record.num_landmarks, bool) if occluded is None else occluded,
          "name": face_name(record, root, index),
          "crop_to_image": face["crop_to_image"],
        },
      )


def _has_faces(root: str, folder: str) -> bool:
  path = os.path.join(root, *folder.split("/"))
  return os.path.isdir(path) and bool(os.listdir(path))


class Msm300w(FaceCropBuilder):
  name = "msm_300w"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  --manual_dir is the 300-W release as unpacked (docs/datasets.md): afw/, helen/trainset/,
  helen/testset/, lfpw/trainset/, lfpw/testset/, ibug/ (images + .pts), optionally
  300W/01_Indoor/ and 300W/02_Outdoor/ (the private test set) and "Bounding Boxes/"
  (bounding_boxes_<folder>.mat, for box_source "detector" or "ground_truth").
  """

  def faces(self, root):
    splits = {}
    for split, folders in w300.SPLIT_FOLDERS.items():
      if not any(_has_faces(root, folder) for folder in folders):
        _logger.warning("300-W split %r left out: none of %s under %s", split, folders, root)
        continue
      # As datasets.py reads them: the configured boxes train, the landmarks' evaluate.
      box_source = self.builder_config.box_source if split == "train" else "landmarks"
      splits[split] = w300.read_300w(root, split, box_source=box_source)
    if not splits:
      raise FileNotFoundError(
        f"no 300-W folders under {root} ({self.MANUAL_DOWNLOAD_INSTRUCTIONS})"
      )
    return splits


class MsmWflw(FaceCropBuilder):
  name = "msm_wflw"
  NUM_POINTS = wflw.POINTS_WFLW
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  --manual_dir holds the two WFLW archives unpacked (docs/datasets.md):
  WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt and
  WFLW_images/<event folder>/<file>.jpg.
  """

  def faces(self, root):
    test = wflw.read_wflw(root, "test")
    subsets = wflw.wflw_subsets(test)
    splits = {"train": wflw.read_wflw(root, "train"), "test": test}
    splits.update({name: subsets[name] for name in wflw.ATTRIBUTE_NAMES if subsets[name]})
    return splits


class MsmCofw(FaceCropBuilder):
  name = "msm_cofw"
  NUM_POINTS = cofw.POINTS_COFW
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  --manual_dir holds COFW_train_color.mat and COFW_test_color.mat (or the grayscale
  COFW_train.mat and COFW_test.mat) of the RCPR release (docs/datasets.md).
  """

  def faces(self, root):
    return {split: cofw.read_cofw(root, split) for split in ("train", "test")}


class MsmCofw68(FaceCropBuilder):
  name = "msm_cofw68"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  --manual_dir holds COFW_test_color.mat (or COFW_test.mat, here or in COFW68_Data/) and
  COFW68_Data/ of golnazghiasi/cofw68-benchmark: test_annotations/<i>_points.mat and
  cofw68_test_bboxes.mat (docs/datasets.md).
  """

  def faces(self, root):
    return {"test": cofw.read_cofw68(root)}


class MsmMenpo(FaceCropBuilder):
  name = "msm_menpo"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  --manual_dir is the Menpo 2D training folder: images + .pts; its 68-point semi-frontal faces
  are kept, the 39-point profile faces left out (docs/datasets.md).
  """

  def faces(self, root):
    return {"train": w300.read_menpo(root)}


# The registered name of each builder: the values of datasets.py's `Prepared.builder`.
BUILDERS = {builder.name: builder for builder in (Msm300w, MsmWflw, MsmCofw, MsmCofw68, MsmMenpo)}

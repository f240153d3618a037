"""What the ST-GAN trains on: (I_fake, I_real, theta*) triples (Sec. III-A, IV-C).

* ``I_fake`` is "a designed facial image with rotation, scale and unnecessary
  background" (Sec. III-A): the face cropped from its provided (detector) box
  (Sec. IV-C: "the faces are cropped by the provided bounding boxes and resized
  to 128 x 128"), then perturbed by a random rotation, zoom and shift
  (``config.stgan.perturb_*``) -- the augmentation of Sec. IV-C, which is what
  gives the generator something to undo.
* ``I_real`` is "the ground truth image without rotation, scale and unnecessary
  background": the canonical face. The paper defines the canonical pose by the
  ground-truth pupils and mouth centre (Sec. IV-C); here the least-squares
  similarity (``geometry.estimate_similarity``) puts those three points on a
  template given in a 128 x 128 frame. By default (``config.stgan.template_source =
  "training_crops"``) the template is where the anchors sit on average in the
  ground-truth-box crops the hourglass trains on (:func:`ground_truth_crop_template`),
  so that the ST-GAN's canonical pose is the hourglass's frame; "fixed" takes
  ``config.stgan.template_*`` as given.
* ``theta*`` (Eq. 5) is the STN matrix that turns I_fake into I_real:
  ``sampler.warp(I_fake, theta*, (S, S)) ~ I_real`` wherever I_fake shows the face.
  Its output frame is I_real's, its input frame I_fake's, so in pixels it is
  ``fake_matrix @ inverse(real_matrix)`` (both image -> crop matrices).

A random flip is applied to the *source image* (mirror + left/right renaming of the
landmarks) before both crops, so the flipped face gets its own canonical crop with
the pupils on the template (flipping the 128 x 128 canonical crop itself would
move them by half a pixel, the template being centred on x = 64, not 63.5).
Colour jitter uses one draw for both images, so the pair differs only in geometry.

NumPy, PIL and ml_collections only, no JAX (runs in Grain workers, see ``augment.py``).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from msm_jax.core import geometry
from msm_jax.data import augment, records

# The frame the template coordinates in the config refer to.
TEMPLATE_FRAME_SIZE = 128
TEMPLATE_SOURCES = ("training_crops", "fixed")


def _check_template_source(source) -> None:
  if source not in TEMPLATE_SOURCES:
    raise ValueError(
      f"config.stgan.template_source must be one of {TEMPLATE_SOURCES}, got {source!r}"
    )


@dataclasses.dataclass(frozen=True)
class CanonicalAnchors:
  """Which landmarks define the canonical pose: each anchor is the mean of its points.

  Attributes:
    left_pupil: indices averaged into the image-left pupil (one annotated pupil,
      or the eye-contour points where the scheme has no pupil, as
      ``msm_jax.core.landmarks.pupils``).
    right_pupil: the same for the image-right pupil.
    mouth: the points averaged into the mouth centre.
  """

  left_pupil: tuple[int, ...]
  right_pupil: tuple[int, ...]
  mouth: tuple[int, ...]

  @classmethod
  def from_scheme(cls, scheme) -> CanonicalAnchors:
    """From a ``msm_jax.core.landmarks.LandmarkScheme`` (same rule as ``landmarks.pupils``)."""
    if scheme.pupil_indices is not None:
      left, right = ((scheme.pupil_indices[0],), (scheme.pupil_indices[1],))
    else:
      left, right = scheme.eye_contours
    return cls(tuple(left), tuple(right), tuple(scheme.mouth_indices))

  def points(self, landmarks: np.ndarray) -> np.ndarray:
    """[L, 2] landmarks -> [3, 2] (image-left pupil, image-right pupil, mouth centre)."""
    landmarks = np.asarray(landmarks, np.float64)
    return np.stack(
      [
        landmarks[list(group)].mean(axis=0)
        for group in (self.left_pupil, self.right_pupil, self.mouth)
      ]
    )


@dataclasses.dataclass(frozen=True)
class StganPairOptions:
  """How ST-GAN pairs are made (``config.stgan``, ``config.data``, ``config.augment``).

  Attributes:
    crop_size: S, both crops' side (128).
    box_margin: the provided box is scaled by this before cropping I_fake.
    perturb_rotation_degrees, perturb_scale, perturb_translation: I_fake's
      random similarity (see ``augment.random_augmentation_matrix``).
    template: ((x, y) image-left pupil, image-right pupil, mouth centre) in a
      128 x 128 frame, pixel-centre coordinates.
    flip: random horizontal flip of the source image.
    color_jitter: strength of the colour jitter applied to both images.
  """

  crop_size: int = 128
  box_margin: float = 1.25
  perturb_rotation_degrees: float = 30.0
  perturb_scale: float = 0.1
  perturb_translation: float = 0.1
  template: tuple = ((44.0, 50.0), (84.0, 50.0), (64.0, 96.0))
  flip: bool = False
  color_jitter: float = 0.0

  @classmethod
  def from_config(cls, config) -> StganPairOptions:
    """Raises ValueError while the template is still to be derived from the data."""
    _check_template_source(config.stgan.template_source)
    if config.stgan.template_source != "fixed":
      raise ValueError(
        "config.stgan.template_source='training_crops': derive the template "
        "from the training landmarks first (stgan_pairs.resolve_template)"
      )
    return cls(
      crop_size=int(config.data.crop_size),
      box_margin=float(config.data.box_margin),
      perturb_rotation_degrees=float(config.stgan.perturb_rotation_degrees),
      perturb_scale=float(config.stgan.perturb_scale),
      perturb_translation=float(config.stgan.perturb_translation),
      template=tuple(
        tuple(float(v) for v in point)
        for point in (
          config.stgan.template_left_pupil,
          config.stgan.template_right_pupil,
          config.stgan.template_mouth,
        )
      ),
      flip=bool(config.augment.flip),
      color_jitter=float(config.augment.color_jitter),
    )


def template_points(template, crop_size: int) -> np.ndarray:
  """The template's [3, 2] anchor positions in an S x S crop.

  The config gives them in a 128 x 128 frame; other sizes scale pixel *areas*
  (``x_S = (x_128 + 0.5) * S / 128 - 0.5``), as everywhere in the library.
  """
  points = np.asarray(template, np.float64)
  if points.shape != (3, 2):
    raise ValueError(
      f"template must be 3 (x, y) points (left pupil, right pupil, mouth), got shape {points.shape}"
    )
  return (points + 0.5) * (crop_size / TEMPLATE_FRAME_SIZE) - 0.5


def ground_truth_crop_template(
  shapes: np.ndarray, anchors: CanonicalAnchors, box_margin: float
) -> tuple:
  """Where the anchors sit on average in ground-truth-box crops (the hourglass's frame).

  Each shape is cropped as the hourglass's training faces are (the tight landmark box
  grown by ``box_margin``, ``augment.face_crop_matrix``), its pupils and mouth centre
  are averaged over the shapes, and the result is made left-right symmetric about the
  crop's centre (x -> 127 - x with the pupils swapped), as random flips make the
  hourglass's frame symmetric.

  Args:
    shapes: [N, L, 2] training landmarks, image pixels.
    anchors: which landmarks make the pupils and the mouth centre.
    box_margin: ``config.data.box_margin``.
  Returns:
    ((x, y) image-left pupil, image-right pupil, mouth centre) in the 128 x 128 frame.
  """
  shapes = np.asarray(shapes, np.float64)
  if shapes.ndim != 3 or shapes.shape[0] == 0 or shapes.shape[2] != 2:
    raise ValueError(f"shapes must be [N, L, 2] with N > 0, got shape {shapes.shape}")
  size = TEMPLATE_FRAME_SIZE
  points = np.mean(
    [
      geometry.apply_affine(
        anchors.points(shape),
        augment.face_crop_matrix(records.box_from_landmarks(shape), size, box_margin),
      )
      for shape in shapes
    ],
    axis=0,
  )
  mirrored = points[[1, 0, 2]] * np.array([-1.0, 1.0]) + np.array([size - 1.0, 0.0])
  return tuple(tuple(float(v) for v in point) for point in (points + mirrored) / 2)


def resolve_template(
  config, shapes: np.ndarray, anchors: CanonicalAnchors
) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose ``stgan.template_*`` are fixed.

  With ``template_source = "training_crops"`` they become
  :func:`ground_truth_crop_template` of ``shapes`` (and the source "fixed");
  a "fixed" config is returned as a copy, unchanged.
  """
  _check_template_source(config.stgan.template_source)
  resolved = ml_collections.ConfigDict(config.to_dict())
  if config.stgan.template_source == "fixed":
    return resolved
  left, right, mouth = ground_truth_crop_template(shapes, anchors, config.data.box_margin)
  resolved.stgan.template_left_pupil = left
  resolved.stgan.template_right_pupil = right
  resolved.stgan.template_mouth = mouth
  resolved.stgan.template_source = "fixed"
  return resolved


def canonical_matrix(
  landmarks: np.ndarray, anchors: CanonicalAnchors, template, crop_size: int
) -> np.ndarray:
  """Image pixels -> canonical crop pixels: the similarity fitting the anchors to the template.

  Args:
    landmarks: [L, 2] ground-truth landmarks in image pixels.
    anchors: which landmarks make the pupils and the mouth centre.
    template: see :func:`template_points`.
    crop_size: S.
  Returns:
    [3, 3] float64, least squares over the three anchor points.
  """
  return geometry.estimate_similarity(
    anchors.points(landmarks), template_points(template, crop_size)
  )


def stn_theta(fake_matrix: np.ndarray, real_matrix: np.ndarray, crop_size: int) -> np.ndarray:
  """theta* of Eq. 5: ``sampler.warp(I_fake, theta*) ~ I_real``.

  Args:
    fake_matrix: [3, 3] image -> I_fake pixels.
    real_matrix: [3, 3] image -> I_real pixels.
    crop_size: S, both crops' side.
  Returns:
    [2, 3] float32, normalised I_real coordinates -> normalised I_fake coordinates.
  """
  real_to_fake = fake_matrix @ geometry.invert_affine(real_matrix)
  size = (crop_size, crop_size)
  return geometry.pixel_matrix_to_theta(real_to_fake, size, size).astype(np.float32)


def make_stgan_pair(
  image: np.ndarray,
  landmarks: np.ndarray,
  box,
  rng: np.random.Generator,
  *,
  options: StganPairOptions,
  anchors: CanonicalAnchors,
  flip_permutation,
) -> dict:
  """One ST-GAN training triple.

  Args:
    image: [H, W, 3] uint8.
    landmarks: [L, 2] ground truth, image pixels (they define I_real only).
    box: [4] (x0, y0, x1, y1) the provided / detector face box (defines I_fake).
    rng: the example's generator; draws flip, perturbation, colour jitter.
    options: see :class:`StganPairOptions`.
    anchors: canonical-pose landmarks of the scheme.
    flip_permutation: [L] the scheme's left/right permutation.
  Returns:
    dict with
      fake: [S, S, 3] uint8, I_fake;
      real: [S, S, 3] uint8, I_real;
      theta: [2, 3] float32, theta* (I_real frame -> I_fake frame, normalised);
      fake_landmarks: [L, 2] float32, the landmarks in I_fake pixels (the joint stage's
        targets; left/right renamed when flipped);
      fake_matrix, real_matrix: [3, 3] float32, image -> I_fake / I_real pixels.
  """
  size = options.crop_size
  landmarks = np.asarray(landmarks, np.float64)
  box = np.asarray(box, np.float64)
  source = np.eye(3)  # image -> (possibly mirrored) image in which both crops are defined
  # Drawn even when flipping is off, so switching it never reshuffles the other draws.
  if rng.uniform() < 0.5 and options.flip:
    width = image.shape[1]
    source = augment.flip_matrix(width)
    landmarks = geometry.apply_affine(landmarks, source)[np.asarray(flip_permutation)]
    box = np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]])
  perturbation = augment.random_augmentation_matrix(
    rng, size, options.perturb_rotation_degrees, options.perturb_scale, options.perturb_translation
  )
  fake_from_source = perturbation @ augment.face_crop_matrix(box, size, options.box_margin)
  fake_matrix = fake_from_source @ source
  fake_landmarks = geometry.apply_affine(landmarks, fake_from_source)
  real_matrix = canonical_matrix(landmarks, anchors, options.template, size) @ source
  fake = augment.warp_image(image, fake_matrix, size)
  real = augment.warp_image(image, real_matrix, size)
  if options.color_jitter > 0:
    # Jittered together (one draw, one mean grey): one pixel-wise colour map
    # for both, so the pair differs in geometry only.
    fake, real = augment.color_jitter(np.stack([fake, real]), rng, options.color_jitter)
  return {
    "fake": fake,
    "real": real,
    "theta": stn_theta(fake_matrix, real_matrix, size),
    "fake_landmarks": fake_landmarks.astype(np.float32),
    "fake_matrix": fake_matrix.astype(np.float32),
    "real_matrix": real_matrix.astype(np.float32),
  }

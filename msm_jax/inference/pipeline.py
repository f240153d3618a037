"""The whole MSM inference (Algorithm 2) as one jit-compiled function.

    crop + resize each face box to 128x128       (Alg. 2 line 1)
 -> GDNN theta, canonical face by `warp`          (line 2, Sec. III-A; switchable: ST)
 -> stacked hourglass heatmaps                    (line 3, Sec. III-B)
 -> decode (Eq. 8 + sub-pixel) and scores (Eq. 9), normalised by the best score (lines 4-10)
 -> canonicalise, masked kNN + ridge repair       (lines 11-13, Sec. III-C; switchable: SR)
 -> back through theta^-1 and the crop to original-image pixels (line 14)
 -> optionally again, from a crop fitted to these landmarks (`recrop_passes`, see below)

No per-face Python loop and no host round-trip: every step is a batched jnp kernel, so the
function lowers to a single XLA computation (tests/test_pipeline.py checks it).

Two composition choices, both exact rewrites rather than approximations:
* The ST stage does not resample the 128x128 crop a second time: the crop's theta and the
  GDNN's theta are composed (normalised 3x3 matrices) and the canonical face is sampled once
  from the original image. This avoids a second interpolation and the black borders a
  zoom-out would bring in from outside the crop.
* Images of different sizes in one batch are zero-padded at the bottom/right to a common
  size by the caller (`pad_images`). Zero padding is exactly what `warp` does outside an
  image, and a box's pixel coordinates do not move, so padding changes no result.

Re-cropping (not in the paper; `recrop_passes`): a detector's box is framed differently from
the landmark boxes the hourglass is trained on, and a rolled face is not upright in it. Each
re-crop pass takes the previous pass's final landmarks, turns them upright (the roll of the
similarity that maps them onto the dictionary's mean shape, whose pupils are level), crops
their tight box x `box_margin` as a square in that upright frame (the training crop's
convention), and runs the whole pipeline again on that crop. The outputs are the last pass's.

Adaptive compute (`make_adaptive_inference_fn`, not in the paper): one pass without the flip,
and the flip and the re-crop pass only for the faces whose first pass is unsure, by the
face's confidence (`face_confidence`: how much of each landmark's heatmap lies in Eq. 9's
window around its peak). A sure face costs one landmark-network call instead of four (re-crop
x flip); the tracker (`tracking.py`) runs it on crops made from the previous frame's
landmarks, photos on the detector's crops. Both branches are one XLA conditional per face, so
the computation compiles once whatever the faces turn out to need.

Start-up (`use_compilation_cache`, `with_saved_trace`): XLA's compilations go to JAX's
persistent cache in the user's cache folder, and the traced pipeline beside them as a
`jax.export` file, so a second process neither traces nor compiles it.

Canonical frame for the shape repair: the dictionary shapes were aligned by their pupils
(Sec. IV-C). At test time the eyes may be the occluded part, so instead of the predicted
pupils we fit a similarity from the *reliable* predicted landmarks to the dictionary's mean
shape (weights = reliability); with fewer than two reliable landmarks every landmark is used.

Gradients (`differentiable=True`): the final landmarks become a smooth function (almost
everywhere) of the GDNN and landmark-network variables and of a float image. Algorithm 2's
discrete steps are relaxed as follows, everything else is already differentiable:
* Eq. 8: the integer peak (argmax) is fixed; the DARK Taylor step around it
  (`decode_method="dark"`, or "soft_argmax") is a smooth function of the map values, and for
  a Gaussian-shaped map shifted by a fraction of a pixel the step follows the shift, so the
  decoded landmark follows the image as the exact decoder does. The peak's jumps carry no
  gradient.
* Algorithm 2 lines 7-8: the reliability mask becomes the weight
  w = sigmoid((score - threshold) / reliability_temperature). The repair's similarity fit
  weights each landmark by w, the ridge fit of Eq. 11 weights each coordinate's residual by
  w^2, and the output is w * hourglass landmark + (1 - w) * reconstruction (with
  `hourglass_weight` a: w' = a + (1 - a) w in place of w).
* Eq. 11's neighbour search (top_k on the hard mask) selects dictionary rows without a
  gradient; the gradient flows through the ridge fit on the selected rows.
The forward values differ from the exact pipeline only through the soft weights: where every
w is 0 or 1 in float32 (scores further than ~17 temperatures from their threshold) both give
the same landmarks, and with the repair off they are identical.
"""

import dataclasses
import functools
import hashlib
import importlib.metadata
import os
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from msm_jax import files, models
from msm_jax.core import geometry, landmarks, sampler, shape_dictionary
from msm_jax.core import heatmaps as heatmap_lib


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  crop_size: int = 128
  heatmap_size: int = 64
  use_spatial_transformer: bool = True  # the "ST" of the ablation tables
  use_shape_reconstruction: bool = True  # the "SR" of the ablation tables
  # The landmark network's variables: variables[landmark_stage] (the stage that trained it),
  # and what it outputs (msm_jax/models: "heatmaps", or "coordinates" as the Res-50 baseline
  # of Sec. IV-G, which has no heatmaps, hence no scores and no shape repair).
  landmark_stage: str = "hourglass"
  landmark_output: str = "heatmaps"
  heatmaps_are_logits: bool = True  # trained with the spatial-softmax cross-entropy
  decode_method: str = "dark"
  decode_blur_sigma: float | None = 1.5
  score_radius: int = 1  # r of Eq. 9
  num_neighbours: int = 100  # k, Sec. IV-C
  ridge_lambda: float = 60.0  # Sec. IV-C
  replace: str = "unreliable"  # or "all": the paper's literal S_F = D_S alpha
  # The hourglass's own share of a repaired landmark: 0 replaces it by the reconstruction
  # (Eq. 11, the paper); a > 0 returns a x hourglass + (1 - a) x reconstruction.
  hourglass_weight: float = 0.0
  recrop_passes: int = 0  # further passes on a crop fitted to the landmarks (see above)
  # Test-time flip: the scheme's left/right permutation, or None (off). The hourglass also
  # sees the mirrored crop; the two sets of maps are averaged before decoding.
  flip_test: tuple | None = None
  box_margin: float = 1.25  # the training crop: landmark box x this, squared
  upright_recrop: bool = True  # re-crop turned by the face's roll (needs the dictionary)
  # Smooth relaxations of Algorithm 2 for jax.grad (module docstring), and the width of the
  # soft reliability weight in normalised-score units.
  differentiable: bool = False
  reliability_temperature: float = 0.05
  # (dx, dy) added to the output landmarks, in the pixels of the images given: the part of
  # the training annotations' pixel convention that a flip-trained network cannot learn
  # (msm_jax/eval/annotation_offset.py). A package's fit; (0, 0) for a training config.
  landmark_offset: tuple = (0.0, 0.0)
  # Each face through the pipeline on its own (a batch of one, looped inside the jit): a
  # face's result then does not depend on the other faces of its batch, whose number changes
  # which CPU kernels run and, in bfloat16, how they round. `pretrained` turns it on where
  # JAX computes on the CPU, where a batch of one costs the same per face.
  per_face: bool = False


DIFFERENTIABLE_DECODERS = ("dark", "soft_argmax")  # a gradient w.r.t. the map values


def options_from_config(
  config,
  use_st: bool = True,
  use_sr: bool = True,
  landmark_stage: str = "hourglass",
  differentiable: bool = False,
) -> PipelineOptions:
  """The pipeline options a trained config implies: crop and map sizes, decoding (maps are
  logits when the heatmap loss says so), Eq. 9's radius, the repair's k and lambda, the
  re-crop passes; the landmark network of ``landmark_stage``'s config section."""
  output = models.architecture(config, landmark_stage).output
  inference = config.get("inference", {})
  return PipelineOptions(
    crop_size=config.data.crop_size,
    heatmap_size=config.data.heatmap_size,
    use_spatial_transformer=use_st,
    use_shape_reconstruction=use_sr and output == "heatmaps",
    landmark_stage=landmark_stage,
    landmark_output=output,
    heatmaps_are_logits=output == "heatmaps"
    and heatmap_lib.loss_outputs_logits(config.hourglass.loss),
    decode_blur_sigma=config.hourglass.sigma,
    score_radius=config.shape.score_radius,
    num_neighbours=config.shape.num_neighbours,
    ridge_lambda=config.shape.ridge_lambda,
    replace=config.shape.replace,
    hourglass_weight=float(config.shape.get("hourglass_weight", 0.0)),
    recrop_passes=int(inference.get("recrop_passes", 0)),
    flip_test=tuple(landmarks.get_scheme(config.data.scheme).flip_permutation)
    if inference.get("flip_test", False)
    else None,
    upright_recrop=bool(inference.get("upright_recrop", True)),
    box_margin=float(config.data.box_margin),
    differentiable=differentiable,
    reliability_temperature=float(config.shape.get("reliability_temperature", 0.05)),
  )


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """Modules and variables of a trained MSM: what `make_inference_fn` needs.

  generator: the GDNN module; networks: {stage name: landmark network module} ("hourglass",
  and "resnet" when the baseline was trained); variables: {"generator", one entry per
  network's stage, "dictionary" [N, L, 2], "thresholds" [L]}; available: the stages found;
  variants: {stage name: {model: variables}} of stages that fine-tune the others' networks
  (the joint stage: "generator" and "hourglass").
  """

  generator: Any
  networks: dict
  variables: dict
  available: frozenset
  variants: dict = dataclasses.field(default_factory=dict)

  def inference_fn(self, options: PipelineOptions) -> Callable:
    return make_inference_fn(self.generator, self.networks[options.landmark_stage], options)

  def adaptive_inference_fn(self, options: PipelineOptions) -> Callable:
    return make_adaptive_inference_fn(
      self.generator, self.networks[options.landmark_stage], options
    )

  def variant(self, name: str) -> "TrainedModel":
    """This model with the networks of variant ``name`` (e.g. "joint") in place."""
    if name not in self.variants:
      raise KeyError(f"no trained variant {name!r}; trained: {sorted(self.variants) or 'none'}")
    return dataclasses.replace(
      self, variables={**self.variables, **self.variants[name]}, variants={}
    )


def pad_images(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Zero-pad images of different sizes to one batch (bottom/right), uint8 or float.

  Returns (batch [B, Hmax, Wmax, 3], sizes [B, 2] as (height, width)).
  """
  if not images:
    raise ValueError("pad_images: no images given")
  height = max(image.shape[0] for image in images)
  width = max(image.shape[1] for image in images)
  batch = np.zeros((len(images), height, width, 3), images[0].dtype)
  for index, image in enumerate(images):
    batch[index, : image.shape[0], : image.shape[1]] = image
  return batch, np.array([image.shape[:2] for image in images], np.int32)


def _normalised_homogeneous(theta: jax.Array) -> jax.Array:
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0], theta.dtype), theta.shape[:-2] + (1, 3))
  return jnp.concatenate([theta, bottom], axis=-2)


def make_inference_fn(generator, landmark_model, options: PipelineOptions) -> Callable:
  """Build `infer(variables, images, boxes) -> dict`, jitted.

  generator, landmark_model: the Flax modules: GDNN, and the landmark network (heatmaps, or
    coordinates: `options.landmark_output`).
  variables: {"generator": GDNN variables (unused when ST is off), options.landmark_stage
    (e.g. "hourglass"): the landmark network's variables, "dictionary": [N, L, 2] canonical
    shapes, "thresholds": [L] reliability thresholds (Table IX, per region)}.
  images: [B, H, W, 3] uint8 or float32 in [0, 1] (padded, see `pad_images`).
  boxes: [B, 4] face boxes x0, y0, x1, y1 in image pixels (square them beforehand).
  Returns: landmarks [B, L, 2] in image pixels (final), hourglass_landmarks [B, L, 2]
    (before the shape repair; both with `options.landmark_offset` added), scores [B, L]
    (normalised Eq. 9), reliable [B, L] bool,
    reliability [B, L] (the repair's weights: the mask as 0/1, or its soft relaxation when
    `options.differentiable`), theta [B, 2, 3] (GDNN output, identity when ST is off),
    canonical_faces [B, S, S, 3], canonical_landmarks [B, L, 2] (the hourglass's,
    canonical-crop pixels) and canonical_to_image [B, 3, 3].
  With `options.differentiable`, `jax.grad` of a function of the outputs flows to the
  variables and to float images (module docstring).
  """
  check_options(options)
  size = options.crop_size

  def infer(variables, images, boxes):
    crop_to_image = geometry.invert_affine(geometry.crop_matrix(boxes.astype(jnp.float32), size))
    outputs, _ = run_pass(generator, landmark_model, options, variables, images, crop_to_image)
    for _ in range(options.recrop_passes):
      crop_to_image = landmark_crop_to_image(outputs["landmarks"], variables["dictionary"], options)
      outputs, _ = run_pass(generator, landmark_model, options, variables, images, crop_to_image)
    return with_landmark_offset(outputs, options.landmark_offset)

  def infer_per_face(variables, images, boxes):
    one = lambda face: jax.tree.map(
      lambda output: output[0], infer(variables, face[0][None], face[1][None])
    )
    return jax.lax.map(one, (images, boxes))  # every output [B, ...], as `infer`'s

  return jax.jit(infer_per_face if options.per_face else infer)


# What the adaptive pipeline returns of a pass (the canonical crops stay inside: a caller that
# wants them runs `make_inference_fn`).
ADAPTIVE_OUTPUTS = (
  "landmarks",
  "hourglass_landmarks",
  "scores",
  "reliable",
  "reliability",
  "confidence",
  "theta",
)


def make_adaptive_inference_fn(generator, landmark_model, options: PipelineOptions) -> Callable:
  """Build `infer(variables, images, crop_to_image, refine_below, keep_above) -> dict`, jitted:
  Algorithm 2 with compute where the scores ask for it (module docstring).

  A first pass, without the flip, on the given crops; for each face whose first-pass
  confidence is in [keep_above, refine_below), the rest of the pipeline from its landmarks:
  max(1, recrop_passes) re-crop passes with the flip where ``options.flip_test`` is on. The
  other faces keep their first pass. refine_below = inf refines every face, -inf none;
  keep_above lets a caller skip faces it will drop anyway (a tracker's lost faces).

  variables: as for `make_inference_fn`.
  images: [B, H, W, 3] uint8 or float32 in [0, 1].
  crop_to_image: [B, 3, 3] crop -> image pixel matrices of the first crops (any similarity:
    a crop turned by the face's roll, `landmark_crop_to_image`'s, is fine).
  refine_below, keep_above: float32 scalars; arguments, so that other thresholds compile
    nothing.
  Returns: `make_inference_fn`'s outputs named in ADAPTIVE_OUTPUTS (of each face's last
    pass, landmark offset added; confidence [B] is that pass's `face_confidence`),
    first_confidence [B] and first_landmarks [B, L, 2] (the first pass's), refined [B] bool.
  """
  check_options(options)
  first_options = dataclasses.replace(options, flip_test=None)

  def rest_of_pipeline(variables, images, outputs):
    for _ in range(max(1, options.recrop_passes)):
      crop_to_image = landmark_crop_to_image(outputs["landmarks"], variables["dictionary"], options)
      outputs, _ = run_pass(generator, landmark_model, options, variables, images, crop_to_image)
    return outputs

  def infer(variables, images, crop_to_image, refine_below, keep_above):
    crop_to_image = crop_to_image.astype(jnp.float32)
    first, _ = run_pass(generator, landmark_model, first_options, variables, images, crop_to_image)
    confidence = first["confidence"]
    unsure = (confidence < refine_below) & (confidence >= keep_above)

    def refined():
      rest = rest_of_pipeline(variables, images, first)
      choose = lambda later, earlier: jnp.where(
        jnp.reshape(unsure, unsure.shape + (1,) * (later.ndim - 1)), later, earlier
      )
      return jax.tree.map(choose, rest, first)

    # With one face per call (`per_face`) this is a real branch: a sure face skips the rest.
    outputs = jax.lax.cond(jnp.any(unsure), refined, lambda: first)
    outputs = {name: outputs[name] for name in ADAPTIVE_OUTPUTS}
    outputs = with_landmark_offset(
      {**outputs, "first_landmarks": first["landmarks"]}, options.landmark_offset
    )
    return {**outputs, "first_confidence": confidence, "refined": unsure}

  def infer_per_face(variables, images, crop_to_image, refine_below, keep_above):
    one = lambda face: jax.tree.map(
      lambda output: output[0],
      infer(variables, face[0][None], face[1][None], refine_below, keep_above),
    )
    return jax.lax.map(one, (images, crop_to_image))

  return jax.jit(infer_per_face if options.per_face else infer)


def with_landmark_offset(outputs: dict, offset) -> dict:
  """The outputs with ``offset`` (dx, dy) added to every landmark set (image pixels)."""
  if not any(offset):
    return outputs
  shift = jnp.asarray(offset, jnp.float32)
  moved = ("landmarks", "hourglass_landmarks", "first_landmarks")
  return {name: value + shift if name in moved else value for name, value in outputs.items()}


def check_options(options: PipelineOptions) -> None:
  """Options that cannot work fail here with their name, before anything is traced."""
  if options.recrop_passes < 0:
    raise ValueError(f"recrop_passes must be >= 0, got {options.recrop_passes}")
  if options.landmark_output not in ("heatmaps", "coordinates"):
    raise ValueError(
      f"landmark_output must be heatmaps or coordinates: {options.landmark_output!r}"
    )
  if options.differentiable and options.decode_method not in DIFFERENTIABLE_DECODERS:
    raise ValueError(
      f"differentiable=True needs a decode_method with a gradient "
      f"{DIFFERENTIABLE_DECODERS}, got {options.decode_method!r}"
    )
  if options.reliability_temperature <= 0:
    raise ValueError(f"reliability_temperature must be > 0, got {options.reliability_temperature}")
  if not 0.0 <= options.hourglass_weight <= 1.0:
    raise ValueError(f"hourglass_weight must be in [0, 1], got {options.hourglass_weight}")
  offset = np.asarray(options.landmark_offset, np.float64)
  if offset.shape != (2,) or not np.all(np.isfinite(offset)):
    raise ValueError(f"landmark_offset must be two finite numbers, got {options.landmark_offset}")


def sample_crops(images, theta, size: int):
  """[B, size, size, 3] float32 crops in [0, 1] of float images in [0, 1] or of uint8 ones,
  scaled after the sampler has gathered its taps: a window many times the crop is never
  converted whole (bilinear sampling is linear, so the order changes nothing but rounding)."""
  crops = sampler.warp(images, theta, (size, size))
  return crops / 255.0 if images.dtype == jnp.uint8 else crops


def run_pass(generator, landmark_model, options: PipelineOptions, variables, images, crop_to_image):
  """One pass of Algorithm 2 on images [B, H, W, 3] (uint8, or float in [0, 1]) from crops
  given by their crop -> image pixel matrices [B, 3, 3]: (outputs as `make_inference_fn`'s,
  the landmark network's raw output: the stacked maps [S, B, h, w, L] or normalised
  coordinates). Not jitted: the joint training stage differentiates it inside its own step."""
  size = options.crop_size
  image_hw = images.shape[1:3]
  crop_theta = geometry.pixel_matrix_to_theta(crop_to_image, image_hw, (size, size))
  crops = sample_crops(images, crop_theta, size)
  if options.use_spatial_transformer:
    st_theta = generator.apply(variables["generator"], crops, train=False)
  else:
    st_theta = jnp.broadcast_to(jnp.eye(2, 3, dtype=jnp.float32), crop_theta.shape)
  # canonical normalised -> crop normalised (GDNN) -> image normalised (crop).
  total_theta = (_normalised_homogeneous(crop_theta) @ _normalised_homogeneous(st_theta))[:, :2]
  canonical = sample_crops(images, total_theta, size)

  raw = landmark_model.apply(variables[options.landmark_stage], canonical, train=False)
  if options.landmark_output == "coordinates":
    points = normalised_to_crop(raw, size)
    scores = jnp.ones(points.shape[:2], jnp.float32)
    reliable = jnp.ones(points.shape[:2], bool)
    weights = reliable.astype(jnp.float32)
    confidence = jnp.ones(points.shape[:1], jnp.float32)
  else:
    maps, points = hourglass_points(
      landmark_model, variables[options.landmark_stage], canonical, options, stacks=raw
    )
    scores, reliable, weights = reliability(maps, variables["thresholds"], options)
    confidence = face_confidence(maps, options.score_radius)

  final = points
  if options.use_shape_reconstruction and options.landmark_output == "heatmaps":
    final = repair_shapes(
      points,
      reliable,
      variables["dictionary"],
      options,
      weights=weights if options.differentiable else None,
    )

  to_image = geometry.theta_to_pixel_matrix(total_theta, image_hw, (size, size))
  outputs = {
    "landmarks": geometry.apply_affine(final, to_image),
    "hourglass_landmarks": geometry.apply_affine(points, to_image),
    "scores": scores,
    "reliable": reliable,
    "reliability": weights,
    "confidence": confidence,
    "theta": st_theta,
    "canonical_faces": canonical,
    # The hourglass landmarks in the canonical crop and that crop's pixels -> image pixels:
    # enough to rerun the repair alone (Table IX's threshold sweep).
    "canonical_landmarks": points,
    "canonical_to_image": to_image,
  }
  return outputs, raw


def landmark_crop_to_image(
  points: jax.Array, dictionary: jax.Array, options: PipelineOptions
) -> jax.Array:
  """[B, 3, 3] crop -> image pixel matrices of the re-crop around landmarks [B, L, 2] (image
  pixels): their tight box x ``box_margin``, squared, in the frame where the face is upright
  (``upright_recrop``; the roll of the similarity onto the dictionary's mean shape) or the
  image's own frame."""
  if options.upright_recrop:
    mean_shape = jnp.mean(dictionary, axis=0)
    to_canonical = geometry.estimate_similarity(points, jnp.broadcast_to(mean_shape, points.shape))
    roll = jnp.arctan2(to_canonical[:, 1, 0], to_canonical[:, 0, 0])
    cos, sin, zero, one = jnp.cos(roll), jnp.sin(roll), jnp.zeros_like(roll), jnp.ones_like(roll)
    upright = jnp.stack(
      [
        jnp.stack([cos, -sin, zero], -1),
        jnp.stack([sin, cos, zero], -1),
        jnp.stack([zero, zero, one], -1),
      ],
      -2,
    )  # image -> upright frame
  else:
    upright = jnp.broadcast_to(jnp.eye(3, dtype=points.dtype), points.shape[:-2] + (3, 3))
  turned = geometry.apply_affine(points, upright)
  low, high = jnp.min(turned, axis=-2), jnp.max(turned, axis=-2)
  centre = (low + high) / 2
  half = options.box_margin * jnp.max(high - low, axis=-1, keepdims=True) / 2
  square = jnp.concatenate([centre - half, centre + half], axis=-1)
  return geometry.invert_affine(geometry.crop_matrix(square, options.crop_size) @ upright)


def normalised_to_crop(normalised: jax.Array, crop_size: int) -> jax.Array:
  """Normalised coordinates of Eq. 2 (the Res-50 baseline's outputs) -> crop pixels."""
  return ((normalised + 1.0) * crop_size - 1.0) / 2.0


def hourglass_points(hourglass, hourglass_variables, crops, options: PipelineOptions, stacks=None):
  """The last stack's maps (probabilities) and their decoded landmarks in crop pixels; with
  `flip_test`, the maps averaged with those of the mirrored crop, mirrored back. ``stacks``:
  the network's output on ``crops`` when the caller already has it."""

  def probabilities(maps):
    return heatmap_lib.spatial_softmax(maps) if options.heatmaps_are_logits else maps

  if stacks is None:
    stacks = hourglass.apply(hourglass_variables, crops, train=False)
  maps = probabilities(stacks[-1])
  if options.flip_test is not None:
    # Channel i of the mirrored crop's maps is landmark flip_test[i] mirrored (the scheme's
    # left/right permutation, an involution); mirrored crop pixel S-1-x is map pixel h-1-x_h.
    mirrored_stacks = hourglass.apply(hourglass_variables, crops[:, :, ::-1], train=False)
    mirrored = probabilities(mirrored_stacks[-1])[:, :, ::-1][..., jnp.asarray(options.flip_test)]
    maps = (maps + mirrored) / 2
  decoded = heatmap_lib.decode_heatmaps(
    maps, options.decode_method, blur_sigma=options.decode_blur_sigma
  )
  return maps, heatmap_lib.heatmap_to_crop(decoded, options.crop_size, options.heatmap_size)


def reliability(maps, thresholds, options: PipelineOptions):
  """Eq. 9's normalised scores [B, L], the reliability mask [B, L] (lines 7-8) and the
  repair's weights: the mask as 0/1, or w = sigmoid((score - K) / temperature) when
  `options.differentiable`."""
  peaks = heatmap_lib.heatmap_argmax(maps)
  scores = heatmap_lib.normalise_scores(
    heatmap_lib.landmark_scores(maps, peaks, options.score_radius)
  )
  reliable = heatmap_lib.reliable_mask(scores, thresholds)
  if options.differentiable:
    weights = jax.nn.sigmoid((scores - thresholds) / options.reliability_temperature)
  else:
    weights = reliable.astype(jnp.float32)
  return scores, reliable, weights


def face_confidence(maps, radius: int) -> jax.Array:
  """[B] in [0, 1]: the share of each landmark's heatmap [B, h, w, L] that lies in Eq. 9's
  (2r+1) x (2r+1) window around its peak, averaged over the face's landmarks.

  Eq. 9's scores are normalised by the face's best landmark (Algorithm 2 line 6), which says
  which landmarks of a face to trust but not whether the crop holds a face at all: on a crop of
  background every map is flat and the best of them still scores 1. Unnormalised, the share
  is near 1 for a sharp peak and (2r+1)^2 / (h w) for a flat map."""
  peaks = heatmap_lib.heatmap_argmax(maps)
  in_window = heatmap_lib.landmark_scores(maps, peaks, radius) * (2 * radius + 1) ** 2
  total = jnp.sum(maps, axis=(1, 2))
  share = in_window / jnp.maximum(total, jnp.finfo(jnp.float32).tiny)
  return jnp.mean(jnp.clip(share, 0.0, 1.0), axis=-1)


def repair_shapes(points, reliable, dictionary, options: PipelineOptions, weights=None):
  """Sec. III-C in the dictionary's frame: align, reconstruct, align back, then give the
  hourglass its share ``options.hourglass_weight`` of every repaired landmark (a reliable
  one, which the repair returns as it was, stays as it was). points [B, L, 2] in any frame
  (the alignment is a similarity fit), reliable [B, L] bool; weights [B, L]: soft
  reliability for the relaxed repair (module docstring), None for the exact one."""
  mean_shape = jnp.mean(dictionary, axis=0)  # [L, 2]
  fit_weights = reliable.astype(jnp.float32) if weights is None else weights
  enough = jnp.sum(fit_weights, axis=-1, keepdims=True) >= 2
  fit_weights = jnp.where(enough, fit_weights, 1.0)
  to_canonical = geometry.estimate_similarity(
    points, jnp.broadcast_to(mean_shape, points.shape), fit_weights
  )  # [B, 3, 3]
  canonical_points = geometry.apply_affine(points, to_canonical)
  repaired, _ = shape_dictionary.reconstruct(
    canonical_points,
    reliable,
    dictionary,
    k=options.num_neighbours,
    ridge_lambda=options.ridge_lambda,
    replace=options.replace,
    weights=weights,
  )
  repaired = geometry.apply_affine(repaired, geometry.invert_affine(to_canonical))
  share = options.hourglass_weight
  return repaired if share == 0 else share * points + (1 - share) * repaired


CACHE_FOLDER_VARIABLE = "MSM_JAX_CACHE_DIR"  # overrides `default_cache_folder`


def default_cache_folder() -> str:
  """$XDG_CACHE_HOME/msm-jax/jax (~/.cache/msm-jax/jax where unset): the user's cache."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "msm-jax", "jax")


def use_compilation_cache(folder: str | None = None) -> str | None:
  """Keep XLA's compilations of this process in ``folder`` (default: $MSM_JAX_CACHE_DIR, else
  `default_cache_folder`) and load them from there: JAX's persistent compilation cache. The
  pipeline's weights are arguments, not constants, so an entry serves every package of the
  same config; the key also holds the jaxlib version and XLA flags, so a stale entry is never
  used. Returns the folder, or None where it cannot be made (a read-only home): then every
  process compiles, as without it. Call it before the first compilation."""
  folder = folder or os.environ.get(CACHE_FOLDER_VARIABLE) or default_cache_folder()
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError:
    return None
  if not os.access(folder, os.W_OK):
    return None
  jax.config.update("jax_compilation_cache_dir", folder)
  return folder


def compilation_cache_folder() -> str | None:
  """The persistent compilation cache's folder (`use_compilation_cache`), None when off."""
  return jax.config.jax_compilation_cache_dir or None


@functools.cache
def _source_digest() -> str:
  """SHA-256 of msm_jax's Python files: a saved trace is only ever the code that made it."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  digest = hashlib.sha256()
  for folder, subfolders, names in os.walk(root):
    subfolders.sort()
    for name in sorted(names):
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        digest.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as file:
          digest.update(file.read())
  return digest.hexdigest()


def with_saved_trace(function: Callable, arguments, key: str, folder: str | None) -> Callable:
  """``function`` (jitted) for arguments shaped as ``arguments``, traced at most once per
  machine: its lowered program is kept in ``folder`` (a `jax.export` file; None: not kept,
  ``function`` is returned) and read back by later processes, which then skip tracing and
  lowering (seconds for the pipeline) and go straight to the compilation cache.

  ``key`` names what the arguments' shapes do not say (the options, the network's config);
  the file's name also holds the shapes, the JAX, jaxlib and Flax versions, the backend and
  msm_jax's source, so a file made by other code is never used. The program's custom calls
  (the oneDNN kernels) have no compatibility guarantee across versions, which the name makes
  moot, so `jax.export`'s check for them is off."""
  if folder is None:
    return function
  shapes = jax.tree.map(lambda value: jax.ShapeDtypeStruct(np.shape(value), value.dtype), arguments)
  versions = [importlib.metadata.version(name) for name in ("jax", "jaxlib", "flax")]
  name = hashlib.sha256(
    "|".join([key, repr(shapes), *versions, jax.default_backend(), _source_digest()]).encode()
  ).hexdigest()
  path = os.path.join(folder, "msm-jax-traces", f"{name}.jaxexport")
  try:
    with open(path, "rb") as file:
      exported = jax.export.deserialize(bytearray(file.read()))
  except Exception:  # not there yet, or a file any reader rejects: trace again
    targets = set(re.findall(r"custom_call @(\w+)", function.lower(*shapes).as_text()))
    try:
      exported = jax.export.export(
        function,
        platforms=(jax.default_backend(),),
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(t) for t in sorted(targets)],
      )(*shapes)
    except Exception:  # a program jax.export cannot hold: the saved trace is only a shortcut
      return function
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with files.atomic_write(path, "wb") as file:
        file.write(exported.serialize())
    except OSError:
      pass  # a read-only cache: this process traced anyway, later ones will too
  return jax.jit(exported.call)

"""Default data set of msm-jax: seeded synthetic faces with exact landmarks.

The paper trains and tests on 300-W, COFW and WFLW (Sec. IV-A). This generator stands in for
them when no data is present (CI, smoke tests, tutorials). Every stage can be trained and
checked end to end on it. It makes the difficulties the paper targets: in-plane rotation and
yaw (ST-GAN, Sec. III-A), occluders with per-landmark flags (score + shape repair,
Sec. III-B/C), blur, noise, lighting and cluttered backgrounds.

A face is drawn from its landmarks (synthetic_shapes.py), so each landmark lies on a visible
edge. The face is a skin region bounded by the jaw curve; brows are filled shapes whose top
edge runs through the brow points; eyes are almonds through the six eye points (white
sclera, iris, dark lash line); the nose has a bridge line and a base curve through 31-35;
the lips are filled polygons through 48-59, with a dark cavity inside 60-67 when the mouth
is open. Drawing happens at `supersample` x resolution with PIL, then box-downsampling gives
the anti-aliasing.

Determinism: face k of seed s uses only numpy Generators seeded by SeedSequence([s, k]) (one
child stream per aspect: shape, pose, look, background, occluders, post-processing). So
render_face(s, k) is the k-th face of render_faces(s, n) and needs no other face. Changing
the occlusion settings leaves the face, background and lighting as they were.
"""

import dataclasses
import functools
import math
import statistics
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from msm_jax.data import overlays
from msm_jax.data import synthetic_shapes as shapes
from msm_jax.data.synthetic_shapes import map_68_to_29, map_68_to_98

_SCHEMES = {68: lambda lm: lm, 98: map_68_to_98, 29: map_68_to_29}
OCCLUDER_KINDS = ("hand", "bar", "sunglasses", "mask")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Settings of the synthetic data set (every field can come from an ml_collections config).

  Pose ranges are symmetric: an angle is drawn uniformly from [-max, +max].
  face_size_range: landmark height of the neutral frontal face / image_size.
  max_shift: shift of the face centre, as a fraction of image_size. After the shift, the face
    is moved back inside the image if its landmarks would come within 2 % of the border.
  """

  image_size: int = 128
  num_faces: int = 10_000  # faces in the default data set (read by data loaders)
  seed: int = 0  # seed of the default data set (read by data loaders)
  num_landmarks: int = 68  # 68 (iBUG / 300-W), 98 (WFLW) or 29 (COFW)
  supersample: int = 2  # drawing resolution factor (anti-aliasing)
  face_size_range: tuple[float, float] = (0.45, 0.65)
  max_roll_deg: float = 25.0
  max_yaw_deg: float = 30.0
  max_pitch_deg: float = 12.0
  max_shift: float = 0.08
  mouth_open_prob: float = 0.4
  max_mouth_open: float = 1.0  # 1 = widest opening of the shape model
  max_smile: float = 1.0
  max_brow_raise: float = 1.0
  illumination_strength: float = 0.4  # brightness gradient across the image
  blur_prob: float = 0.3
  max_blur_sigma: float = 1.2  # Gaussian blur sigma in output pixels
  max_noise_std: float = 10.0  # Gaussian pixel noise std, in 0..255 grey levels
  background_clutter: int = 10  # at most this many small shapes / lines / textures
  occlusion_prob: float = 0.3  # probability that a face has occluders
  max_occluders: int = 2

  def __post_init__(self):
    def check(ok, field, problem):
      if not ok:
        raise ValueError(f"SyntheticConfig.{field}={getattr(self, field)!r}: {problem}")

    check(
      isinstance(self.image_size, int) and self.image_size >= 32,
      "image_size",
      "must be an int >= 32",
    )
    check(self.num_landmarks in _SCHEMES, "num_landmarks", "must be 68, 98 or 29")
    check(self.supersample in (1, 2, 3, 4), "supersample", "must be 1, 2, 3 or 4")
    sizes = self.face_size_range
    check(
      len(sizes) == 2 and 0 < sizes[0] <= sizes[1] <= 1,
      "face_size_range",
      "needs (low, high) with 0 < low <= high <= 1",
    )
    check(0 <= self.max_roll_deg <= 180, "max_roll_deg", "must be in [0, 180]")
    check(
      0 <= self.max_yaw_deg <= shapes.MAX_YAW_DEG,
      "max_yaw_deg",
      f"must be in [0, {shapes.MAX_YAW_DEG:.1f}] (larger yaw folds the face over)",
    )
    check(
      0 <= self.max_pitch_deg <= shapes.MAX_PITCH_DEG,
      "max_pitch_deg",
      f"must be in [0, {shapes.MAX_PITCH_DEG:.1f}]",
    )
    for field in (
      "mouth_open_prob",
      "blur_prob",
      "occlusion_prob",
      "max_mouth_open",
      "max_smile",
      "max_brow_raise",
      "illumination_strength",
      "max_shift",
    ):
      check(0 <= getattr(self, field) <= 1, field, "must be in [0, 1]")
    for field in ("max_blur_sigma", "max_noise_std", "background_clutter", "num_faces"):
      check(getattr(self, field) >= 0, field, "must be >= 0")
    check(self.max_occluders >= 1, "max_occluders", "must be >= 1")

  @classmethod
  def from_mapping(cls, mapping) -> "SyntheticConfig":
    """From a dict or ml_collections.ConfigDict; unknown keys raise ValueError."""
    values = dict(mapping.to_dict() if hasattr(mapping, "to_dict") else mapping)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"SyntheticConfig: unknown field(s) {unknown}")
    if "face_size_range" in values:
      values["face_size_range"] = tuple(values["face_size_range"])
    return cls(**values)


def _as_config(config) -> SyntheticConfig:
  if config is None:
    return SyntheticConfig()
  if isinstance(config, SyntheticConfig):
    return config
  if isinstance(config, Mapping) or hasattr(config, "to_dict"):
    return SyntheticConfig.from_mapping(config)
  raise ValueError(f"config must be a SyntheticConfig, a mapping or None, got {type(config)}")


def _check_int(name: str, value, minimum: int = 0) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  return int(value)


# ----------------------------------------------------------------------------------------------
# Drawing helpers (canvas = supersampled image; c = supersample factor).


def _rgb(colour) -> tuple[int, int, int]:
  return tuple(int(min(max(v, 0.0), 255.0) + 0.5) for v in colour)


def _points(poly: np.ndarray) -> list[float]:
  """Flat [x0, y0, x1, y1, ...] list, the fastest form for ImageDraw."""
  return poly.ravel().tolist()


# PIL rounds polygon vertices to pixel centres and also fills the pixels the boundary crosses,
# so its filled shapes are too big. Moving the vertices this many canvas pixels inwards
# removes the bias: the measured mean boundary offset after downsampling is below 0.01 output
# pixels at supersample 2 (tests/test_synthetic.py checks it).
_INSET = 0.35


def _inset(poly: np.ndarray, amount: float = _INSET) -> np.ndarray:
  """Moves a closed polygon's vertices `amount` canvas pixels inwards (see _INSET)."""
  following = np.concatenate([poly[1:], poly[:1]])
  tangent = following - np.concatenate([poly[-1:], poly[:-1]])
  length = np.sqrt(tangent[:, 0] * tangent[:, 0] + tangent[:, 1] * tangent[:, 1]) + 1e-9
  twice_area = (poly[:, 0] * following[:, 1] - following[:, 0] * poly[:, 1]).sum()
  step = (amount if twice_area > 0 else -amount) / length
  return poly + np.stack([-tangent[:, 1] * step, tangent[:, 0] * step], axis=1)


_CIRCLE = shapes.cos_sin_table(25, 0.0, 2 * math.pi)


def _ellipse(centre, radius_x: float, radius_y: float, angle: float) -> np.ndarray:
  """Polygon [24, 2] of a rotated ellipse."""
  cos_a, sin_a = math.cos(angle), math.sin(angle)
  x, y = radius_x * _CIRCLE[0][:-1], radius_y * _CIRCLE[1][:-1]
  return np.stack([centre[0] + cos_a * x - sin_a * y, centre[1] + sin_a * x + cos_a * y], axis=1)


def _fill(draws, poly: np.ndarray, colours) -> None:
  """Fills a polygon on several ImageDraws at once (image and occluder mask)."""
  pts = _points(_inset(poly))
  for draw, colour in zip(draws, colours):
    draw.polygon(pts, fill=colour)


def _stroke(draws, line: np.ndarray, colours, width: int) -> None:
  pts = _points(line)
  for draw, colour in zip(draws, colours):
    draw.line(pts, fill=colour, width=width)


# ----------------------------------------------------------------------------------------------
# Scene: background, face, occluders.


def _background(rng: np.random.Generator, size: int, clutter: int) -> Image.Image:
  """Cluttered background: large colour regions, then shapes, lines and noise textures."""
  image = Image.new("RGB", (size, size), _rgb(rng.random(3) * 255))
  draw = ImageDraw.Draw(image)
  num_large, num_small = 2 + int(rng.integers(3)), int(rng.integers(clutter + 1))
  for i in range(num_large + num_small):
    scale = size * (0.6 if i < num_large else 0.18)
    centre, colour = rng.random(2) * size, _rgb(rng.random(3) * 255)
    kind = int(rng.integers(4))
    if kind == 0:
      radii = scale * (0.3 + rng.random(2))
      _fill([draw], _ellipse(centre, radii[0], radii[1], rng.random() * math.pi), [colour])
    elif kind == 1:
      corners = centre + scale * (rng.random((3 + int(rng.integers(4)), 2)) * 2 - 1)
      draw.polygon(_points(corners), fill=colour)
    elif kind == 2:
      ends = centre + scale * (rng.random((2 + int(rng.integers(3)), 2)) * 2 - 1)
      draw.line(_points(ends), fill=colour, width=1 + int(rng.integers(size // 24 + 1)))
    else:  # a patch of blocky or smooth noise texture
      cells = rng.integers(0, 256, (2 + int(rng.integers(10)), 2 + int(rng.integers(10)), 3))
      width, height = (scale * (0.5 + rng.random(2))).astype(int) + 2
      patch = Image.fromarray(cells.astype(np.uint8)).resize(
        (int(width), int(height)), Image.NEAREST if rng.random() < 0.5 else Image.BILINEAR
      )
      image.paste(patch, tuple((centre - [width / 2, height / 2]).astype(int)))
  return image


def _skin_tone(u: np.ndarray) -> np.ndarray:
  """Skin colour from dark to light with a little red / yellow variation; u: 3 uniforms."""
  dark, light = np.array([80.0, 52.0, 38.0]), np.array([245.0, 212.0, 188.0])
  return (
    dark
    + (light - dark) * u[0]
    + np.array([12.0, 4.0, -6.0]) * (u[1] - 0.5) * 2
    + np.array([0.0, 8.0, -8.0]) * (u[2] - 0.5)
  )


_HAIR = np.array(
  [[20, 16, 14], [60, 40, 25], [110, 75, 45], [190, 160, 110], [150, 150, 150], [130, 55, 30]],
  dtype=np.float64,
)
_IRIS = np.array(
  [[70, 45, 25], [40, 25, 15], [60, 100, 150], [70, 110, 70], [100, 100, 110]], dtype=np.float64
)


def _draw_face(image, rng, shape: shapes.FaceShape, pose: shapes.Pose, lm, c: int) -> None:
  """Draws hair, neck, skin, brows, eyes, nose and mouth. lm: [68, 2] canvas coordinates."""
  u = rng.random(16)
  draw = ImageDraw.Draw(image)
  skin = _skin_tone(u[0:3])
  hair = _HAIR[int(u[3] * len(_HAIR))] * (0.8 + 0.4 * u[4])
  brow = 0.3 * skin + 0.3 * hair  # always clearly darker than the skin
  lips = (
    skin * [0.78, 0.5, 0.52] + [28, 6, 12]
    if u[5] < 0.8
    else np.array([150, 25, 45]) * (0.6 + 0.5 * u[6])
  )
  to_canvas = lambda canonical: shapes.apply_pose(canonical, shape, pose) * c + (c - 1) / 2

  # Long hair falls behind the head, short hair only covers its top; some faces are bald.
  style = int(u[7] * 3)
  if style < 2:
    arc = shape.forehead * [1.12, 1.08] + [0, -0.05]
    length = 1.4 if style == 0 else 0.1
    back = np.concatenate(
      [[[1.12 * shape.half_width, length]], arc, [[-1.12 * shape.half_width, length]]]
    )
    _fill([draw], to_canvas(back), [_rgb(hair)])
  _fill([draw], to_canvas(shape.neck), [_rgb(skin * 0.72)])
  jaw = shapes.jaw_curve(lm)
  _fill([draw], np.concatenate([jaw, to_canvas(shape.forehead)]), [_rgb(skin)])
  _stroke([draw], jaw[8:57], [_rgb(skin * 0.72)], c)  # shadow under the jaw line
  if style < 2:  # fringe: the top of the forehead, cut along a hairline above the brows
    hairline = -0.72 - 0.25 * u[8]
    top = shape.forehead[shape.forehead[:, 1] < hairline]
    if len(top) > 1:
      _fill([draw], to_canvas(np.concatenate([top, [[0.0, hairline + 0.06]]])), [_rgb(hair)])

  for side in (0, 1):
    _fill([draw], shapes.brow_outline(lm, side), [_rgb(brow)])

  # Eyes: sclera with iris and pupil, clipped to the almond, then the lash line on top.
  iod = float(shapes.inter_ocular(lm))
  iris_colour = _rgb(_IRIS[int(u[9] * len(_IRIS))] * (0.8 + 0.4 * u[10]))
  sclera = _rgb(np.array([238.0, 236.0, 230.0]) * (0.85 + 0.15 * u[11]))
  for side, centre in zip((0, 1), shapes.eye_centres(lm)):
    outline = shapes.eye_outline(lm, side)
    x0, y0 = np.floor(outline.min(0)).astype(int) - 1
    x1, y1 = np.ceil(outline.max(0)).astype(int) + 2
    patch = Image.new("RGB", (int(x1 - x0), int(y1 - y0)), sclera)
    mask = Image.new("L", patch.size, 0)
    cx, cy = centre[0] - x0, centre[1] - y0
    radius = 0.075 * iod
    patch_draw = ImageDraw.Draw(patch)
    patch_draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=iris_colour)
    pupil = 0.45 * radius
    patch_draw.ellipse([cx - pupil, cy - pupil, cx + pupil, cy + pupil], fill=(12, 10, 10))
    ImageDraw.Draw(mask).polygon(_points(_inset(outline - [x0, y0])), fill=255)
    image.paste(patch, (int(x0), int(y0)), mask)
    lash = _rgb(skin * 0.2)
    _stroke([draw], np.concatenate([outline, outline[:1]]), [lash], c)
    _stroke([draw], outline[0:13], [lash], c + c // 2)  # upper lid: t = 0 .. 3

  # Nose: shaded bridge line through 27-30, nostrils, dark base curve through 31-35.
  shade = _rgb(skin * 0.75)
  _stroke([draw], shapes.spline(lm[27:31], shapes.dense_params(4, 3, False), False), [shade], c)
  base = shapes.spline(lm[31:36], shapes.dense_params(5, 3, False), False)
  for centre in (0.6 * lm[32] + 0.4 * lm[31], 0.6 * lm[34] + 0.4 * lm[35]):
    nostril = _ellipse(
      centre - [0, 0.02 * iod],
      0.045 * iod,
      0.022 * iod,
      math.atan2(lm[35, 1] - lm[31, 1], lm[35, 0] - lm[31, 0]),
    )
    _fill([draw], nostril, [_rgb(skin * 0.35)])
  _stroke([draw], base, [_rgb(skin * 0.5)], c)

  # Mouth: lips, then the dark cavity when open or the dark parting line when closed.
  _fill([draw], shapes.lip_outline(lm, inner=False), [_rgb(lips)])
  opening = np.abs(lm[[61, 62, 63], 1] - lm[[67, 66, 65], 1]).max()
  if opening > 0.5 * c:
    _fill([draw], shapes.lip_outline(lm, inner=True), [_rgb(lips * 0.25)])
  else:
    _stroke(
      [draw],
      shapes.spline(lm[60:65], shapes.dense_params(5, 3, False), False),
      [_rgb(lips * 0.4)],
      c,
    )


def _occluders(rng, draws, lm: np.ndarray, max_count: int) -> None:
  """1..max_count hands, bars, sunglasses or face masks on the face, drawn on every ImageDraw
  in `draws` (the image in its colour, the occluder mask in 255). lm: [68, 2] canvas."""
  iod = float(shapes.inter_ocular(lm))
  for _ in range(1 + int(rng.integers(max_count))):
    kind = OCCLUDER_KINDS[int(rng.integers(len(OCCLUDER_KINDS)))]
    colour = _rgb(_skin_tone(rng.random(3)) if kind == "hand" else rng.random(3) * 255)
    if kind == "sunglasses":
      colour = _rgb(np.array([20.0, 20.0, 25.0]) + 50 * rng.random())
    colours = [colour, 255]
    if kind == "hand":  # palm plus four fingers around a random landmark
      angle = rng.random() * 2 * math.pi
      centre = lm[int(rng.integers(68))] + (rng.random(2) - 0.5) * 0.6 * iod
      palm = iod * (0.3 + 0.15 * rng.random(2))
      _fill(draws, _ellipse(centre, palm[0], palm[1], angle), colours)
      for finger in range(4):
        spread = angle + (finger - 1.5) * 0.28
        base = centre + palm[0] * 0.8 * np.array([math.cos(spread), math.sin(spread)])
        tip = base + iod * (0.35 + 0.2 * rng.random()) * np.array(
          [math.cos(spread), math.sin(spread)]
        )
        _fill(draws, _ellipse(tip, 0.06 * iod, 0.06 * iod, 0.0), colours)
        _stroke(draws, np.stack([base, tip]), colours, max(1, int(0.12 * iod)))
    elif kind == "bar":  # a straight object crossing the face
      angle = rng.random() * math.pi
      centre = lm[int(rng.integers(68))]
      half_length, half_width = iod * (0.6 + 1.5 * rng.random()), iod * (0.06 + 0.12 * rng.random())
      along = half_length * np.array([math.cos(angle), math.sin(angle)])
      across = half_width * np.array([-math.sin(angle), math.cos(angle)])
      corners = np.stack(
        [
          centre + along + across,
          centre + along - across,
          centre - along - across,
          centre - along + across,
        ]
      )
      _fill(draws, corners, colours)
    elif kind == "sunglasses":  # two dark lenses on the eyes, a bridge and the temples
      axis = lm[45] - lm[36]
      angle = math.atan2(axis[1], axis[0])
      for side, centre in enumerate(shapes.eye_centres(lm)):
        eye = shapes.EYE_CONTOURS[side]
        width = math.dist(lm[eye[0]], lm[eye[3]])
        _fill(draws, _ellipse(centre, 0.75 * width, 0.5 * width, angle), colours)
      frame = max(1, int(0.04 * iod))
      bridge = 0.35 * (lm[39] + lm[42]) + 0.15 * (lm[21] + lm[22])
      _stroke(draws, np.stack([lm[39], bridge, lm[42]]), colours, frame)
      _stroke(draws, np.stack([lm[36], lm[0]]), colours, frame)
      _stroke(draws, np.stack([lm[45], lm[16]]), colours, frame)
    else:  # face mask from the nose bridge to below the chin, slightly wider than the jaw
      centre = lm[30]
      jaw = shapes.jaw_curve(lm)[8:57]
      jaw = centre + (jaw - centre) * 1.06
      _fill(draws, np.concatenate([jaw, [lm[29] * 0.6 + lm[28] * 0.4]]), colours)


# ----------------------------------------------------------------------------------------------
# Public API.


@functools.lru_cache(maxsize=None)
def _gauss_table() -> np.ndarray:
  """256 standard-normal quantiles: random bytes -> approximately Gaussian noise (fast)."""
  table = np.array([statistics.NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)])
  return (table / table.std()).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _ramps(size: int) -> tuple[np.ndarray, np.ndarray]:
  ramp = (2 * np.arange(size, dtype=np.float32) + 1) / size - 1
  return ramp[None, :], ramp[:, None]


def _sample_pose(rng, shape: shapes.FaceShape, config: SyntheticConfig) -> shapes.Pose:
  """Random pose; then shifts the face so its landmarks stay 2 % inside the image."""
  u = rng.random(6)
  size = config.image_size
  low, high = config.face_size_range
  angle = lambda max_deg, v: math.radians(max_deg) * (2 * v - 1)
  centre = (size - 1) / 2 + config.max_shift * size * (2 * u[4:6] - 1)
  pose = shapes.Pose(
    yaw=angle(config.max_yaw_deg, u[0]),
    pitch=angle(config.max_pitch_deg, u[1]),
    roll=angle(config.max_roll_deg, u[2]),
    pixels_per_unit=(low + (high - low) * u[3]) * size / shapes.CANONICAL_FACE_HEIGHT,
    centre=(0.0, 0.0),
  )
  lm = shapes.pose_landmarks(shape, pose)
  margin = 0.02 * size
  low_bound, high_bound = margin - lm.min(0), size - 1 - margin - lm.max(0)
  inside = np.where(
    low_bound > high_bound, 0.5 * (low_bound + high_bound), np.clip(centre, low_bound, high_bound)
  )
  return dataclasses.replace(pose, centre=(float(inside[0]), float(inside[1])))


def render_face(seed: int, index: int, config=None, return_occluder_mask: bool = False) -> dict:
  """Renders face `index` of the data set `seed`, independently of every other face.

  config: SyntheticConfig, a dict / ConfigDict of its fields, or None for the defaults.
  Returns dict(image [S, S, 3] uint8, landmarks [L, 2] float32 (0-based pixel centres, L =
  config.num_landmarks), occluded [L] bool (an occluder covers the landmark's pixel), box [4]
  float32 (x0, y0, x1, y1): the tight box of the landmarks) and, if return_occluder_mask,
  occluder_mask [S, S] float32: the fraction of each pixel that occluders cover.
  A landmark is occluded when its pixel (nearest to it, clipped to the image) is at least half
  covered. Landmarks leave the image only if face_size_range is too large to fit the face.
  """
  config = _as_config(config)
  seed, index = _check_int("seed", seed), _check_int("index", index)
  streams = [
    np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence([seed, index]).spawn(6)
  ]
  shape_rng, pose_rng, look_rng, background_rng, occluder_rng, post_rng = streams
  c, size = config.supersample, config.image_size

  shape = shapes.face_shape(
    shapes.sample_shape_params(
      shape_rng,
      config.max_mouth_open,
      config.max_smile,
      config.max_brow_raise,
      config.mouth_open_prob,
    )
  )
  pose = _sample_pose(pose_rng, shape, config)
  lm68 = shapes.pose_landmarks(shape, pose)
  landmarks = _SCHEMES[config.num_landmarks](lm68)

  image = _background(background_rng, size * c, config.background_clutter)
  lm68_canvas = lm68 * c + (c - 1) / 2  # output pixel x -> canvas pixel c*x + (c-1)/2
  _draw_face(image, look_rng, shape, pose, lm68_canvas, c)
  mask = Image.new("L", image.size, 0)
  if occluder_rng.random() < config.occlusion_prob:
    _occluders(
      occluder_rng, [ImageDraw.Draw(image), ImageDraw.Draw(mask)], lm68_canvas, config.max_occluders
    )
  if c > 1:
    image, mask = image.reduce(c), mask.reduce(c)

  u = post_rng.random(8)
  if u[0] < config.blur_prob:
    image = image.filter(ImageFilter.GaussianBlur(float(config.max_blur_sigma * u[1])))
  # Lighting: overall brightness, a linear gradient in a random direction, a colour tint.
  ramp_x, ramp_y = _ramps(size)
  strength, direction = config.illumination_strength, 2 * math.pi * u[3]
  light = np.float32(0.8 + 0.35 * u[2]) * (
    1
    + np.float32(strength * math.cos(direction)) * ramp_x
    + np.float32(strength * math.sin(direction)) * ramp_y
  )
  tint = (1 + 0.12 * (u[4:7] - 0.5)).astype(np.float32)
  pixels = np.asarray(image, dtype=np.float32) * (light[:, :, None] * tint)
  noise_std = config.max_noise_std * u[7]
  if noise_std > 0:
    noise = np.frombuffer(post_rng.bytes(pixels.size), np.uint8).reshape(pixels.shape)
    pixels += _gauss_table()[noise] * np.float32(noise_std)
  pixels += 0.5
  pixels = np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)

  coverage = np.asarray(mask, dtype=np.float32) / 255
  cells = np.clip(np.rint(landmarks), 0, size - 1).astype(int)
  out = dict(
    image=pixels,
    landmarks=landmarks.astype(np.float32),
    occluded=coverage[cells[:, 1], cells[:, 0]] >= 0.5,
    box=np.concatenate([landmarks.min(0), landmarks.max(0)]).astype(np.float32),
  )
  if return_occluder_mask:
    out["occluder_mask"] = coverage
  return out


def render_faces(seed: int, count: int, config=None, start: int = 0) -> dict:
  """Faces start .. start+count-1 of data set `seed`, stacked: images [N, S, S, 3] uint8,
  landmarks [N, L, 2] float32, occluded [N, L] bool, boxes [N, 4] float32."""
  count, start = _check_int("count", count), _check_int("start", start)
  config = _as_config(config)
  faces = [render_face(seed, start + i, config) for i in range(count)]
  size, num = config.image_size, config.num_landmarks
  stack = lambda key, empty: np.stack([f[key] for f in faces]) if faces else empty
  return dict(
    images=stack("image", np.zeros((0, size, size, 3), np.uint8)),
    landmarks=stack("landmarks", np.zeros((0, num, 2), np.float32)),
    occluded=stack("occluded", np.zeros((0, num), bool)),
    boxes=stack("box", np.zeros((0, 4), np.float32)),
  )


def save_sample_grid(path, seed: int = 0, config=None, rows: int = 4, zoom: int = 2) -> None:
  """Writes a rows x rows PNG grid of faces 0.. of `seed` with their landmarks drawn (README's
  docs/synthetic_grid.png: save_sample_grid("docs/synthetic_grid.png"))."""
  config = _as_config(config)
  faces = render_faces(seed, rows * rows, config)
  tile = config.image_size * zoom
  grid = Image.new("RGB", (rows * tile + (rows - 1) * 4,) * 2, (255, 255, 255))
  for i in range(rows * rows):
    annotated = overlays.draw_landmarks(
      faces["images"][i], [(faces["landmarks"][i], faces["occluded"][i], None)], zoom
    )
    grid.paste(annotated, ((i % rows) * (tile + 4), (i // rows) * (tile + 4)))
  grid.save(path, optimize=True)

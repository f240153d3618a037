"""Speed of the exemplar shape reconstruction (Sec. III-C, Eq. 11).

  python -m benchmarks.bench_reconstruction [--repeats 7] [--loop_faces 64] [--quick]

Times ``msm_jax.core.shape_dictionary.reconstruct`` (jitted, batched) at batch 1, 32 and 256
against a per-face NumPy loop and a per-face scikit-learn ``Ridge`` loop, with the
paper's sizes: N = 500 exemplars, k = 100 neighbours, 68 points, lambda = 60. Each
number is microseconds per face, median (and minimum) of ``--repeats`` timed calls
after a warm-up call. Target: <= 20 us/face at batch 256, 1000x the paper's
20 ms. A second table splits one 32-face chunk of the kernel into its stages. Machines
here are shared: only ratios measured in the same run are comparable.
"""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax import lax
from sklearn.linear_model import Ridge

from benchmarks import common
from msm_jax.core import landmarks
from msm_jax.core import shape_dictionary as sd
from msm_jax.data import synthetic_shapes

NUM_EXEMPLARS, NUM_NEIGHBOURS, RIDGE_LAMBDA = 500, 100, 60.0
TARGET_US_PER_FACE, PAPER_US_PER_FACE = 20.0, 20_000.0


def realistic_faces(rng, count):
  """Canonical 68-point faces: the synthetic mean face plus 8 shape modes and noise.

  Mode sizes follow the PCA of 300-W training shapes in the canonical frame
  (34, 32, 18, 17, 10, 9, 8, 7 px along unit 136-d directions), plus 0.7 px noise.
  """
  mean = synthetic_shapes.mean_shape()
  template, _ = sd.canonicalise(mean, landmarks.pupils(mean, landmarks.get_scheme("300w")))
  mode_sizes = np.array([34, 32, 18, 17, 10, 9, 8, 7], float)
  modes = np.linalg.qr(np.random.default_rng(0).normal(size=(136, len(mode_sizes))))[0].T
  weights = rng.normal(size=(count, len(mode_sizes))) * mode_sizes
  shapes = template + (weights @ modes).reshape(count, 68, 2)
  return (shapes + rng.normal(size=shapes.shape) * 0.7).astype(np.float32)


def numpy_reconstruct_one(shape, reliable, flat_dictionary):
  """One face with NumPy/SciPy in float64: argpartition kNN, Cholesky ridge."""
  coordinates = np.repeat(reliable, 2)
  query = shape.reshape(-1)
  distances = (((query - flat_dictionary) ** 2) * coordinates).sum(axis=1)
  neighbours = flat_dictionary[np.argpartition(distances, NUM_NEIGHBOURS - 1)[:NUM_NEIGHBOURS]]
  design = neighbours[:, coordinates]
  gram = design @ design.T + RIDGE_LAMBDA * np.eye(NUM_NEIGHBOURS)
  alpha = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram), design @ query[coordinates])
  return np.where(reliable[:, None], shape, (alpha @ neighbours).reshape(-1, 2))


def sklearn_reconstruct_one(shape, reliable, flat_dictionary):
  """One face with scikit-learn's Ridge (the reference the tests compare against)."""
  coordinates = np.repeat(reliable, 2)
  query = shape.reshape(-1)
  distances = (((query - flat_dictionary) ** 2) * coordinates).sum(axis=1)
  neighbours = flat_dictionary[np.argsort(distances, kind="stable")[:NUM_NEIGHBOURS]]
  ridge = Ridge(alpha=RIDGE_LAMBDA, fit_intercept=False).fit(
    neighbours[:, coordinates].T, query[coordinates]
  )
  return np.where(reliable[:, None], shape, (ridge.coef_ @ neighbours).reshape(-1, 2))


def time_per_face(function, args, num_faces, repeats, warmup=1):
  """(median, min) microseconds per face over ``repeats`` calls after ``warmup``."""
  timing = common.time_calls(lambda: function(*args), repeats, warmup)
  return timing.median * 1e6 / num_faces, timing.minimum * 1e6 / num_faces


def stage_functions():
  """Jitted stages of one chunk of ``reconstruct``, each on the previous one's output."""

  def gather(dictionary, neighbours_idx):
    return dictionary.reshape(dictionary.shape[0], -1)[neighbours_idx]

  return {
    "masked distances (direct differences) [B, N]": jax.jit(sd._masked_squared_distances),
    "top_k neighbours [B, k]": jax.jit(lambda dists: lax.top_k(-dists, NUM_NEIGHBOURS)[1]),
    "gather neighbours [B, k, 2L]": jax.jit(gather),
    "reflect + Gram + bordered Cholesky + solve": jax.jit(sd._ridge_coefficients),
  }


def main():
  parser = common.parser("bench_reconstruction", __doc__)
  parser.set_defaults(repeats=7)
  parser.add_argument(
    "--loop_faces",
    type=int,
    default=64,
    help="faces timed in the per-face NumPy / scikit-learn loops",
  )
  args = parser.parse_args()
  common.check_args(args)
  loop_faces = 8 if args.quick else args.loop_faces
  machine = common.machine_info()
  common.print_machine(machine)

  rng = np.random.default_rng(0)
  dictionary = realistic_faces(rng, NUM_EXEMPLARS)
  shapes = realistic_faces(rng, 256)
  # Per face, a random share (20-100 %) of the landmarks is reliable.
  reliable = rng.random((256, 68)) < rng.uniform(0.2, 1.0, size=(256, 1))
  device_dictionary = jnp.asarray(dictionary)

  rows = []
  for batch in (1, 32, 256):
    inputs = (jnp.asarray(shapes[:batch]), jnp.asarray(reliable[:batch]), device_dictionary)
    rows.append(
      (
        f"JAX `reconstruct`, jit, batch {batch}",
        batch,
        *time_per_face(lambda *a: sd.reconstruct(*a)[0], inputs, batch, args.repeats, args.warmup),
      )
    )
  flat_dictionary = dictionary.reshape(NUM_EXEMPLARS, -1).astype(np.float64)
  for name, one_face in (
    ("NumPy/SciPy loop, per face", numpy_reconstruct_one),
    ("scikit-learn Ridge loop, per face", sklearn_reconstruct_one),
  ):
    loop = lambda: [
      one_face(s, r, flat_dictionary)
      for s, r in zip(shapes[:loop_faces].astype(np.float64), reliable[:loop_faces])
    ]
    rows.append((name, 1, *time_per_face(loop, (), loop_faces, args.repeats, args.warmup)))

  print(
    f"N={NUM_EXEMPLARS}, k={NUM_NEIGHBOURS}, L=68, lambda={RIDGE_LAMBDA}, float32 (loops "
    f"float64, {loop_faces} faces); median (min) of {args.repeats} calls after "
    f"{args.warmup} warm-up.\n"
  )
  numpy_median = rows[-2][2]
  table = [
    [
      name,
      f"{median:.1f}",
      f"{minimum:.1f}",
      f"{numpy_median / median:.2f}x",
      f"{PAPER_US_PER_FACE / median:.0f}x",
    ]
    for name, _, median, minimum in rows
  ]
  print(
    common.markdown_table(
      ["method", "us/face median", "us/face min", "vs NumPy loop", "vs paper (20 ms)"], table
    )
  )
  at_256 = rows[2][2]
  status = "met" if at_256 <= TARGET_US_PER_FACE else "not met"
  print(
    f"\nTarget <= {TARGET_US_PER_FACE:.0f} us/face at batch 256: {at_256:.1f} us/face, {status}."
  )

  chunk = 32
  stage_inputs = (jnp.asarray(shapes[:chunk]), jnp.asarray(reliable[:chunk], jnp.float32))
  distances = sd._masked_squared_distances(*stage_inputs, device_dictionary)
  neighbours_idx = lax.top_k(-distances, NUM_NEIGHBOURS)[1]
  neighbours = device_dictionary.reshape(NUM_EXEMPLARS, -1)[neighbours_idx]
  coordinate_mask = jnp.repeat(stage_inputs[1], 2, axis=1)
  targets = stage_inputs[0].reshape(chunk, -1) * coordinate_mask
  stage_args = [
    (*stage_inputs, device_dictionary),
    (distances,),
    (device_dictionary, neighbours_idx),
    (neighbours, coordinate_mask, targets, RIDGE_LAMBDA),
  ]
  stage_rows = []
  for (name, function), stage_arg in zip(stage_functions().items(), stage_args):
    stage_rows.append((name, *time_per_face(function, stage_arg, chunk, args.repeats, args.warmup)))
  print(
    f"\nStages of one {chunk}-face chunk (each jitted alone, so the sum exceeds the "
    "fused kernel):\n"
  )
  print(
    common.markdown_table(
      ["stage", "us/face median", "us/face min"],
      [[name, f"{median:.1f}", f"{minimum:.1f}"] for name, median, minimum in stage_rows],
    )
  )
  common.write_json(
    args.json,
    "bench_reconstruction",
    args,
    machine,
    {
      "sizes": {
        "exemplars": NUM_EXEMPLARS,
        "neighbours": NUM_NEIGHBOURS,
        "landmarks": 68,
        "ridge_lambda": RIDGE_LAMBDA,
        "loop_faces": loop_faces,
      },
      "methods": [
        {"name": name, "batch": batch, "us_per_face_median": median, "us_per_face_min": minimum}
        for name, batch, median, minimum in rows
      ],
      "target_us_per_face_at_256": TARGET_US_PER_FACE,
      "target_met": status == "met",
      "chunk_stages": [
        {"name": name, "us_per_face_median": median, "us_per_face_min": minimum}
        for name, median, minimum in stage_rows
      ],
    },
  )


if __name__ == "__main__":
  main()

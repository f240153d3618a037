"""Speed of the exemplar shape reconstruction (Sec. III-C, Eq. 11): prints Markdown tables.

  python benchmarks/bench_reconstruction.py [--repeats 7] [--loop_faces 64]

Times ``msm_jax.shape_dictionary.reconstruct`` (jitted, batched) at batch 1, 32 and 256
against a per-face NumPy loop and a per-face scikit-learn ``Ridge`` loop, with the
paper's sizes: N = 500 exemplars, k = 100 neighbours, 68 points, lambda = 60. Each
number is microseconds per face, median (and minimum) of ``--repeats`` timed calls
after a warm-up call. A second table splits one 32-face chunk of the kernel into its
stages. Machines here are shared: the load average is printed with the results, and
only ratios measured in the same run are comparable.
"""

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax import lax
from sklearn.linear_model import Ridge

from msm_jax import landmarks
from msm_jax import shape_dictionary as sd
from msm_jax.data import synthetic_shapes

NUM_EXEMPLARS, NUM_NEIGHBOURS, RIDGE_LAMBDA = 500, 100, 60.0


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
        neighbours[:, coordinates].T, query[coordinates])
    return np.where(reliable[:, None], shape, (ridge.coef_ @ neighbours).reshape(-1, 2))


def time_per_face(function, args, num_faces, repeats):
    """(median, min) microseconds per face over ``repeats`` calls after one warm-up."""
    jax.block_until_ready(function(*args))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        seconds.append(time.perf_counter() - start)
    return np.median(seconds) * 1e6 / num_faces, np.min(seconds) * 1e6 / num_faces


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loop_faces", type=int, default=64,
                        help="faces timed in the per-face NumPy / scikit-learn loops")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    dictionary = realistic_faces(rng, NUM_EXEMPLARS)
    shapes = realistic_faces(rng, 256)
    # Per face, a random share (20-100 %) of the landmarks is reliable.
    reliable = rng.random((256, 68)) < rng.uniform(0.2, 1.0, size=(256, 1))
    device_dictionary = jnp.asarray(dictionary)

    rows = []
    for batch in (1, 32, 256):
        inputs = (jnp.asarray(shapes[:batch]), jnp.asarray(reliable[:batch]), device_dictionary)
        rows.append((f"JAX `reconstruct`, jit, batch {batch}",
                     *time_per_face(lambda *a: sd.reconstruct(*a)[0], inputs, batch, args.repeats)))
    flat_dictionary = dictionary.reshape(NUM_EXEMPLARS, -1).astype(np.float64)
    count = args.loop_faces
    for name, one_face in (("NumPy/SciPy loop, per face", numpy_reconstruct_one),
                           ("scikit-learn Ridge loop, per face", sklearn_reconstruct_one)):
        loop = lambda: [one_face(s, r, flat_dictionary)
                        for s, r in zip(shapes[:count].astype(np.float64), reliable[:count])]
        rows.append((name, *time_per_face(loop, (), count, args.repeats)))

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"Machine: {cpu}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          f"(shared), jax {jax.__version__} on {jax.devices()[0].platform}; "
          f"N={NUM_EXEMPLARS}, k={NUM_NEIGHBOURS}, L=68, lambda={RIDGE_LAMBDA}, float32 "
          f"(loops float64); median (min) of {args.repeats} calls after warm-up.\n")
    print("| method | us/face median | us/face min |\n|---|---:|---:|")
    for name, median, minimum in rows:
        print(f"| {name} | {median:.1f} | {minimum:.1f} |")

    chunk = 32
    stage_inputs = (jnp.asarray(shapes[:chunk]), jnp.asarray(reliable[:chunk], jnp.float32))
    distances = sd._masked_squared_distances(*stage_inputs, device_dictionary)
    neighbours_idx = lax.top_k(-distances, NUM_NEIGHBOURS)[1]
    neighbours = device_dictionary.reshape(NUM_EXEMPLARS, -1)[neighbours_idx]
    coordinate_mask = jnp.repeat(stage_inputs[1], 2, axis=1)
    targets = stage_inputs[0].reshape(chunk, -1) * coordinate_mask
    stage_args = [(*stage_inputs, device_dictionary), (distances,),
                  (device_dictionary, neighbours_idx),
                  (neighbours, coordinate_mask, targets, RIDGE_LAMBDA)]
    print(f"\nStages of one {chunk}-face chunk (each jitted alone, so the sum exceeds the "
          "fused kernel):\n\n| stage | us/face median | us/face min |\n|---|---:|---:|")
    for (name, function), stage_arg in zip(stage_functions().items(), stage_args):
        median, minimum = time_per_face(function, stage_arg, chunk, args.repeats)
        print(f"| {name} | {median:.1f} | {minimum:.1f} |")


if __name__ == "__main__":
    main()

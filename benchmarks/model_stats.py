"""Parameter count and forward FLOPs per face of every model at full (paper) size.

Prints a Markdown table. FLOPs come from XLA's cost analysis of the compiled inference
forward pass (``train=False``) at batch 1; nothing is initialised or run, so the script
takes a few seconds.

  .venv/bin/python benchmarks/model_stats.py [--num_landmarks 68]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from msm_jax.models.ddnn import DDNN
from msm_jax.models.gdnn import GDNN
from msm_jax.models.hourglass import StackedHourglass
from msm_jax.models.resnet import ResNet50


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def model_stats(model, image_size: int = 128) -> dict:
  """Parameters, batch statistics and forward FLOPs per face of a Linen model."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  forward = jax.jit(lambda variables, images: model.apply(variables, images, train=False))
  compiled = forward.lower(variables, images).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  output = jax.eval_shape(forward, variables, images)
  return {
    "parameters": _count(variables["params"]),
    "batch_stats": _count(variables.get("batch_stats", {})),
    "gflops": float(cost["flops"]) / 1e9,
    "output": f"{list(output.shape)} {output.dtype}",
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_landmarks", type=int, default=68)
  args = parser.parse_args()
  models = [
    ("GDNN (Table I)", GDNN()),
    ("DDNN (Table II)", DDNN()),
    ("Stacked hourglass (Sec. III-B)", StackedHourglass(num_landmarks=args.num_landmarks)),
    ("Res-50 baseline (Sec. IV-G)", ResNet50(num_landmarks=args.num_landmarks)),
  ]
  print("| model | parameters | BN statistics | forward GFLOP / face | output (batch 1) |")
  print("|---|---:|---:|---:|---|")
  for name, model in models:
    stats = model_stats(model)
    print(
      f"| {name} | {stats['parameters']:,} | {stats['batch_stats']:,} | "
      f"{stats['gflops']:.3f} | {stats['output']} |"
    )


if __name__ == "__main__":
  main()

"""The inference package (msm_jax/inference/): importing it, and running a pretrained
package's pipeline, loads no training code."""

import subprocess
import sys

from msm_jax.train import packaging
from tests import tiny_models

_SCRIPT = """
import sys
import msm_jax.inference
from msm_jax.inference import detection, export, pipeline, prediction, pretrained
model = pretrained.load_pretrained(sys.argv[1])
import numpy as np
images = np.zeros((1, 96, 96, 3), np.uint8)
out = model.infer(model.model.variables, images, np.array([[8, 8, 88, 88]], np.float32))
assert out["landmarks"].shape == (1, 68, 2)
training = sorted(name for name in ("grain", "orbax", "optax", "h5py", "tensorflow_datasets")
                  if name in sys.modules)
ours = sorted(name for name in sys.modules if name.startswith("msm_jax"))
print("TRAINING", training)
print("MSM_JAX", len(ours), ours)
"""


def test_inference_loads_no_training_stack(tmp_path):
  package = str(tmp_path / "package")
  packaging.write_package(tiny_models.tiny_pretrained(), package)
  result = subprocess.run(
    [sys.executable, "-c", _SCRIPT, package],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=tiny_models.ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "TRAINING []" in result.stdout, result.stdout
  modules = [line for line in result.stdout.splitlines() if line.startswith("MSM_JAX")][0]
  assert "msm_jax.train.stages" not in modules and "msm_jax.train.model_io" not in modules

"""The shipped model's recipe, eighth step: the network of `300w_subset_w192_occluders80.py`
(packaged) fine-tuned 8 more epochs with natural texture on 90 % of the faces (a noise patch
on 20 %), Adam 3e-5 halved after 5 epochs:

  python -m msm_jax.train.packaging --config configs/300w_subset_w192_occluders80.py \
      --workdir runs/300w_w192_occluders80 --out runs/300w_w192_occluders80_package \
      --config.inference.flip_test=true --kernel_dtype float16
  python train.py --config configs/300w_subset_w192_occluders90.py \
      --workdir runs/300w_w192_occluders90 --config.stages=hourglass,dictionary
  python -m msm_jax.train.packaging --config configs/300w_subset_w192_occluders90.py \
      --workdir runs/300w_w192_occluders90 --out runs/300w_w192_occluders90_package \
      --config.inference.flip_test=true --kernel_dtype float16

The steps before: `300w_subset_w192.py`, then `_occlusion.py`, `_tight.py`, `_tighter.py`,
`_occluders.py`, `_occluders70.py`, `_occluders80.py` (each docstring has its command); the
steps after: `_hires.py`, `_hires2.py`.
"""

import importlib

occluders80 = importlib.import_module("configs.300w_subset_w192_occluders80")


def get_config():
  config = occluders80.get_config()
  config.hourglass.init_from = "runs/300w_w192_occluders80_package"
  config.augment.natural_occluder = 0.9
  config.hourglass.learning_rate = 3e-5
  return config

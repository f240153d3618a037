"""The shipped model's recipe, third step: the occlusion-aware width-192 network
(`300w_subset_w192_occlusion.py`, packaged) fine-tuned for the crops it sees in its last
pass. The re-crop pass hands the hourglass the tight box of its first-pass landmarks, turned
upright, so the box jitter and roll of `300w_subset_w192.py` (made for detector boxes) are
narrowed to what that pass leaves (a few degrees of roll, a few percent of scale and shift).
Occluders and the occluded landmarks' wider targets are kept. 12 epochs (113 steps each),
Adam 1.25e-4 halved after 6 and 10, ~1.1 steps/s on the 2-core AVX512-BF16 CPU:

  python -m msm_jax.train.packaging --config configs/300w_subset_w192_occlusion.py \
      --workdir runs/300w_w192_occlusion --out runs/300w_w192_occlusion_package \
      --config.inference.flip_test=true --kernel_dtype float16
  python train.py --config configs/300w_subset_w192_tight.py \
      --workdir runs/300w_w192_tight --config.stages=hourglass,dictionary
"""

import importlib

occlusion = importlib.import_module("configs.300w_subset_w192_occlusion")


def get_config():
  config = occlusion.get_config()
  config.hourglass.init_from = "runs/300w_w192_occlusion_package"
  config.augment.rotation_degrees = 12.0
  config.augment.scale = 0.06
  config.augment.translation = 0.04
  return config

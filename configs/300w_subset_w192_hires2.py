"""The shipped model's recipe, last step: the network of `300w_subset_w192_hires.py`
(packaged) fine-tuned 12 more epochs on its 256x256 crops, Adam 5e-5 halved after 6 and 10
epochs:

  python -m msm_jax.train.packaging --config configs/300w_subset_w192_hires.py \
      --workdir runs/300w_w192_hires --out runs/300w_w192_hires_package \
      --config.inference.flip_test=true --kernel_dtype float16
  python train.py --config configs/300w_subset_w192_hires2.py \
      --workdir runs/300w_w192_hires2 --config.stages=hourglass,dictionary
  python -m msm_jax.train.packaging --config configs/300w_subset_w192_hires2.py \
      --workdir runs/300w_w192_hires2 --out pretrained/ \
      --config.inference.flip_test=true --kernel_dtype float16
  python -m msm_jax.inference.export --model pretrained \
      --out pretrained/msm_pipeline.jaxexport --platforms cpu,cuda
"""

import importlib

hires = importlib.import_module("configs.300w_subset_w192_hires")


def get_config():
  config = hires.get_config()
  config.hourglass.init_from = "runs/300w_w192_hires_package"
  config.hourglass.learning_rate = 5e-5
  return config

"""Joint fine-tuning of the ST-GAN's GDNN and the hourglass on the 300-W faces at hand
(`300w_subset.py`'s data and validation images), through the relaxed inference pipeline
(README, "Gradients through MSM"). The workdir holds the trained `stgan` and `hourglass`
checkpoints (and the dictionary), e.g. the ST-GAN of `300w_subset.py` and the hourglass of
`300w_subset_finetune.py`:

  python train.py --config configs/300w_subset_joint.py --workdir runs/300w_joint \
      --config.stages=joint
  python evaluate.py --config configs/300w_subset_joint.py --workdir runs/300w_joint
  python -m msm_jax.train.packaging --config configs/300w_subset_joint.py \
      --workdir runs/300w_joint --out <package> --variant=joint

The crops are the ST-GAN's I_fake: the 300-W box (a detector's), perturbed by up to 30
degrees, 10 % of scale and 10 % of shift.
"""

import importlib

finetune = importlib.import_module("configs.300w_subset_finetune")


def get_config():
  config = finetune.get_config()
  config.hourglass.init_from = ""  # the networks come from the workdir's checkpoints
  config.joint.epochs = 6  # 113 steps per epoch, ~4 s per step on 2 CPU cores
  config.joint.lr_halve_epochs = (4,)
  config.eval_every_steps = 226
  return config

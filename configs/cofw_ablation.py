"""Table VIII: the COFW ablation, i.e. configs/cofw.py (train 300-W, test COFW-68) plus the
Res-50 baseline stage.

  python train.py --config configs/cofw_ablation.py --workdir runs/300w \
      --config.data.root=/data/300W
  python evaluate.py --config configs/cofw_ablation.py --workdir runs/300w \
      --config.data.eval_root=/data/COFW68
"""

from configs import cofw


def get_config():
  config = cofw.get_config()
  config.stages = "all,resnet"
  return config

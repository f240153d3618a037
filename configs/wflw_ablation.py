"""Table VII: the WFLW ablation, i.e. configs/wflw.py plus the Res-50 baseline stage.

  python train.py --config configs/wflw_ablation.py --workdir runs/wflw \
      --config.data.root=/data/WFLW
  python evaluate.py --config configs/wflw_ablation.py --workdir runs/wflw \
      --config.data.root=/data/WFLW

The HG / ST-GAN + HG / HG + SR / ST-GAN + HG + SR rows come from the same checkpoints with
stages switched off at inference; Res-50 and ST-GAN + Res-50 need the extra "resnet" stage.
"""

from configs import wflw


def get_config():
  config = wflw.get_config()
  config.stages = "all,resnet"
  return config

"""WFLW with the paper's settings (Sec. IV-F; Tables VI and VII), 98 landmarks.

  python train.py --config configs/wflw.py --workdir runs/wflw --config.data.root=/data/WFLW

`data.root` holds WFLW_annotations/list_98pt_rect_attr_train_test/ and WFLW_images/.
Failure threshold 0.10 (following LAB, as the paper does).
"""

from configs import base


def get_config():
  config = base.get_config()
  config.data.dataset = "wflw"
  config.data.scheme = "wflw"
  config.data.train_split = "train"
  config.data.eval_splits = (
    "full",
    "pose",
    "expression",
    "illumination",
    "makeup",
    "occlusion",
    "blur",
  )
  config.eval.failure_threshold = 0.10
  return config

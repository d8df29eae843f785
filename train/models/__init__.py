"""PoseConv3D networks: Pose-SlowOnly (and -wd, -HR, the Volleyball width-16 one), Pose-C3D(-s),
Pose-X3D(-s) and RGBPose-Conv3D, built by name.

    from posestream.train.models import build_model, model_complexity
    model = build_model("slowonly", num_classes=60, in_channels=17)   # [N, 17, T, H, W] -> [N, 60]
    model_complexity("slowonly")   # {'params': ..., 'params_no_fc': 1994080, 'gmacs': 15.63}

``zoo`` documents every variant and the state-dict correspondence to PYSKL's checkpoints;
``complexity`` the counting conventions.
"""
from .backbones import C3D, X3D, SlowOnly
from .complexity import PAPER_TABLE, model_complexity
from .heads import ClsHead, RGBPoseHead
from .rgbpose import RGBPoseBackbone, RGBPoseConv3D, late_fusion, rgbpose_loss
from .zoo import MODEL_NAMES, SPECS, PoseConv3D, build_model

__all__ = [
    "C3D", "X3D", "SlowOnly", "ClsHead", "RGBPoseHead", "RGBPoseBackbone", "RGBPoseConv3D", "PoseConv3D",
    "MODEL_NAMES", "SPECS", "PAPER_TABLE", "build_model", "model_complexity", "late_fusion", "rgbpose_loss",
]

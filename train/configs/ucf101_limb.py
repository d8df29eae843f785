# Pose-SlowOnly on UCF101 (split 1), limb heatmaps (L) in PYSKL's released limb order.
# Recipe: PYSKL's configs/posec3d/slowonly_r50_ucf101_k400p/s1_joint.py (PYSKL has no limb config here: its joint recipe, drawing limbs).
# Paper: UCF101 split 1, fine-tuned from Kinetics-400: 87.0 top-1 (paper Table 14; from scratch: 79.1, Table 5).
# PYSKL's k400-pretrained recipe (lr 0.01, step decay at epochs 9 and 11, 12 epochs, 48x48 training
# crops, 56x56 testing), with the paper's SlowOnly (stages 4, 6, 3) pretrained by this project's
# k400 config: load_from points at that run's best.pth. Set load_from = None to train from scratch.
# In PYSKL's config format. Train it with
#     posestream train ucf101_limb

_base_ = ['./ucf101_joint.py', './_k400p_limb.py']
work_dir = './work_dirs/posestream/ucf101_limb'
load_from = './work_dirs/posestream/k400_limb/best.pth'  # the Kinetics-400 limb model

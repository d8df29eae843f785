# Pose-SlowOnly on HMDB51 (split 1), limb heatmaps (L) in PYSKL's released limb order.
# Recipe: PYSKL's configs/posec3d/slowonly_r50_hmdb51_k400p/s1_joint.py (PYSKL has no limb config here: its joint recipe, drawing limbs).
# Paper: HMDB51 split 1, fine-tuned from Kinetics-400: 69.3 top-1 (paper Table 14; from scratch: 58.6, Table 5).
# PYSKL's k400-pretrained recipe (lr 0.01, step decay at epochs 9 and 11, 12 epochs, 48x48 training
# crops, 56x56 testing), with the paper's SlowOnly (stages 4, 6, 3) pretrained by this project's
# k400 config: load_from points at that run's best.pth. Set load_from = None to train from scratch.
# In PYSKL's config format. Train it with
#     posestream train hmdb51_limb

_base_ = ['./hmdb51_joint.py', './_k400p_limb.py']
work_dir = './work_dirs/posestream/hmdb51_limb'
load_from = './work_dirs/posestream/k400_limb/best.pth'  # the Kinetics-400 limb model

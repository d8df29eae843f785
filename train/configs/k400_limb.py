# Pose-SlowOnly on Kinetics-400, limb heatmaps (L) in PYSKL's released limb order.
# Recipe: PYSKL's configs/posec3d/slowonly_r50_463_k400/limb.py.
# Paper: Kinetics-400: 46.0 (J), 47.7 (J + L) top-1 (paper Table 3); PYSKL's release of this (4, 6, 3) SlowOnly: 46.6 / 45.7.
# PYSKL's Kinetics pickle stores poses compressed (DecompressPose, box_thr, memcached): posestream
# reads full-keypoint clips ([M, T, 17, 2] + scores), so convert it first; those settings are left out.
# The paper's SlowOnly (stages 4, 6, 3) is used, as PYSKL's slowonly_r50_463_k400.
# In PYSKL's config format. Train it with
#     posestream train k400_limb

_base_ = ['./k400_joint.py', './_limb.py']
work_dir = './work_dirs/posestream/k400_limb'

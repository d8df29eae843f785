# Pose-SlowOnly on NTU RGB+D 120 X-Set, limb heatmaps (L) in PYSKL's released limb order.
# Recipe: PYSKL's configs/posec3d/slowonly_r50_ntu120_xset/limb.py.
# Paper: NTU120-XSet: 89.6 (J), 90.3 (J + L) top-1 (paper Table 3); PYSKL's release: 89.7 / 89.7.
# In PYSKL's config format. Train it with
#     posestream train ntu120_xset_limb

_base_ = ['./ntu120_xset_joint.py', './_limb.py']
work_dir = './work_dirs/posestream/ntu120_xset_limb'

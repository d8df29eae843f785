# Pose-SlowOnly on NTU RGB+D 120 X-Sub, limb heatmaps (L) in PYSKL's released limb order.
# Recipe: PYSKL's configs/posec3d/slowonly_r50_ntu120_xsub/limb.py.
# Paper: NTU120-XSub: 86.0 (J), 86.9 (J + L) top-1 (paper Table 3); PYSKL's release: 85.9 / 85.9.
# In PYSKL's config format. Train it with
#     posestream train ntu120_xsub_limb

_base_ = ['./ntu120_xsub_joint.py', './_limb.py']
work_dir = './work_dirs/posestream/ntu120_xsub_limb'

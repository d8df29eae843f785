# Pose-SlowOnly on NTU RGB+D 60 X-Sub, limb heatmaps (L) in PYSKL's released limb order.
# Recipe: PYSKL's configs/posec3d/slowonly_r50_ntu60_xsub/limb.py.
# Paper: NTU60-XSub: 93.7 (J), 94.1 (J + L) top-1 (paper Table 3); PYSKL's release: 93.7 / 93.4.
# In PYSKL's config format. Train it with
#     posestream train ntu60_xsub_limb

_base_ = ['./ntu60_xsub_joint.py', './_limb.py']
work_dir = './work_dirs/posestream/ntu60_xsub_limb'

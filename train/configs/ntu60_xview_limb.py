# Pose-SlowOnly on NTU RGB+D 60 X-View, limb heatmaps (L) in PYSKL's released limb order.
# Recipe: PYSKL's configs/posec3d/slowonly_r50_ntu60_xview/limb.py.
# Paper: NTU60-XView: 96.6 (J), 97.1 (J + L) top-1 (paper Table 3); PYSKL's release: 96.5 / 96.0.
# In PYSKL's config format. Train it with
#     posestream train ntu60_xview_limb

_base_ = ['./ntu60_xview_joint.py', './_limb.py']
work_dir = './work_dirs/posestream/ntu60_xview_limb'

# Pose-SlowOnly on NTU RGB+D 60 X-Sub, joint heatmaps (J).
# Recipe: PYSKL's configs/posec3d/slowonly_r50_ntu60_xsub/joint.py.
# Paper: NTU60-XSub: 93.7 (J), 94.1 (J + L) top-1 (paper Table 3); PYSKL's release: 93.7 / 93.4.
# In PYSKL's config format. Train it with
#     posestream train ntu60_xsub_joint

_base_ = ['./_slowonly.py']
label_map = 'label_maps/ntu60.txt'  # class names (a posestream addition; PYSKL ignores it)
work_dir = './work_dirs/posestream/ntu60_xsub_joint'

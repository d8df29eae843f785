# Pose-SlowOnly on NTU RGB+D 60 X-View, joint heatmaps (J).
# Recipe: PYSKL's configs/posec3d/slowonly_r50_ntu60_xview/joint.py.
# Paper: NTU60-XView: 96.6 (J), 97.1 (J + L) top-1 (paper Table 3); PYSKL's release: 96.5 / 96.0.
# In PYSKL's config format. Train it with
#     posestream train ntu60_xview_joint

_base_ = ['./_slowonly.py']
label_map = 'label_maps/ntu60.txt'  # class names (a posestream addition; PYSKL ignores it)
data = dict(
    train=dict(dataset=dict(split='xview_train')),
    val=dict(split='xview_val'),
    test=dict(split='xview_val'))
work_dir = './work_dirs/posestream/ntu60_xview_joint'

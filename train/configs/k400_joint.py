# Pose-SlowOnly on Kinetics-400, joint heatmaps (J).
# Recipe: PYSKL's configs/posec3d/slowonly_r50_463_k400/joint.py.
# Paper: Kinetics-400: 46.0 (J), 47.7 (J + L) top-1 (paper Table 3); PYSKL's release of this (4, 6, 3) SlowOnly: 46.6 / 45.7.
# PYSKL's Kinetics pickle stores poses compressed (DecompressPose, box_thr, memcached): posestream
# reads full-keypoint clips ([M, T, 17, 2] + scores), so convert it first; those settings are left out.
# The paper's SlowOnly (stages 4, 6, 3) is used, as PYSKL's slowonly_r50_463_k400.
# In PYSKL's config format. Train it with
#     posestream train k400_joint

_base_ = ['./_slowonly.py']
model = dict(cls_head=dict(num_classes=400))
ann_file = 'data/k400/k400_hrnet.pkl'
data = dict(
    workers_per_gpu=8,
    train=dict(dataset=dict(ann_file=ann_file, split='train')),
    val=dict(ann_file=ann_file, split='val'),
    test=dict(ann_file=ann_file, split='val'))
optimizer = dict(weight_decay=0.0001)
work_dir = './work_dirs/posestream/k400_joint'

# Pose-SlowOnly on FineGYM-99, joint heatmaps (J).
# Recipe: PYSKL's configs/posec3d/slowonly_r50_gym/joint.py.
# Paper: FineGYM-99: 93.2 (J), 94.3 (J + L) mean class top-1 (paper Table 3); PYSKL's release: 93.8 / 93.8.
# In PYSKL's config format. Train it with
#     posestream train gym_joint

_base_ = ['./_slowonly.py']
model = dict(cls_head=dict(num_classes=99))
ann_file = 'data/gym/gym_hrnet.pkl'
data = dict(
    train=dict(dataset=dict(ann_file=ann_file, split='train')),
    val=dict(ann_file=ann_file, split='val'),
    test=dict(ann_file=ann_file, split='val'))
evaluation = dict(save_best='mean_class_accuracy')
work_dir = './work_dirs/posestream/gym_joint'

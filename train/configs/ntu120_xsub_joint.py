# Pose-SlowOnly on NTU RGB+D 120 X-Sub, joint heatmaps (J).
# Recipe: PYSKL's configs/posec3d/slowonly_r50_ntu120_xsub/joint.py.
# Paper: NTU120-XSub: 86.0 (J), 86.9 (J + L) top-1 (paper Table 3); PYSKL's release: 85.9 / 85.9.
# PYSKL's released NTU-120 'joint' configs draw limb heatmaps (with_limb=True, its default
# skeleton); this one draws joint heatmaps, as the paper's PoseConv3D (J).
# In PYSKL's config format. Train it with
#     posestream train ntu120_xsub_joint

_base_ = ['./_slowonly.py']
model = dict(cls_head=dict(num_classes=120))
ann_file = 'data/nturgbd/ntu120_hrnet.pkl'
label_map = 'label_maps/ntu120.txt'  # class names (a posestream addition; PYSKL ignores it)
class_prob = [1] * 60 + [2] * 60  # labels 60-119 (the classes new in NTU-120) sampled twice as often
data = dict(
    train=dict(dataset=dict(ann_file=ann_file, split='xsub_train', class_prob=class_prob)),
    val=dict(ann_file=ann_file, split='xsub_val'),
    test=dict(ann_file=ann_file, split='xsub_val'))
work_dir = './work_dirs/posestream/ntu120_xsub_joint'

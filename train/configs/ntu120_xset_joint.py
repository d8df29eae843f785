# Pose-SlowOnly on NTU RGB+D 120 X-Set, joint heatmaps (J).
# Recipe: PYSKL's configs/posec3d/slowonly_r50_ntu120_xset/joint.py.
# Paper: NTU120-XSet: 89.6 (J), 90.3 (J + L) top-1 (paper Table 3); PYSKL's release: 89.7 / 89.7.
# PYSKL's released NTU-120 'joint' configs draw limb heatmaps (with_limb=True, its default
# skeleton); this one draws joint heatmaps, as the paper's PoseConv3D (J).
# In PYSKL's config format. Train it with
#     posestream train ntu120_xset_joint

_base_ = ['./_slowonly.py']
model = dict(cls_head=dict(num_classes=120))
ann_file = 'data/nturgbd/ntu120_hrnet.pkl'
label_map = 'label_maps/ntu120.txt'  # class names (a posestream addition; PYSKL ignores it)
data = dict(
    train=dict(dataset=dict(ann_file=ann_file, split='xset_train')),
    val=dict(ann_file=ann_file, split='xset_val'),
    test=dict(ann_file=ann_file, split='xset_val'))
work_dir = './work_dirs/posestream/ntu120_xset_joint'

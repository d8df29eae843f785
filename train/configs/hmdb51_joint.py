# Pose-SlowOnly on HMDB51 (split 1), joint heatmaps (J).
# Recipe: PYSKL's configs/posec3d/slowonly_r50_hmdb51_k400p/s1_joint.py.
# Paper: HMDB51 split 1, fine-tuned from Kinetics-400: 69.3 top-1 (paper Table 14; from scratch: 58.6, Table 5).
# PYSKL's k400-pretrained recipe (lr 0.01, step decay at epochs 9 and 11, 12 epochs, 48x48 training
# crops, 56x56 testing), with the paper's SlowOnly (stages 4, 6, 3) pretrained by this project's
# k400 config: load_from points at that run's best.pth. Set load_from = None to train from scratch.
# In PYSKL's config format. Train it with
#     posestream train hmdb51_joint

_base_ = ['./_slowonly.py', './_k400p.py']
model = dict(cls_head=dict(num_classes=51))
ann_file = 'data/hmdb51/hmdb51_hrnet.pkl'
data = dict(
    train=dict(dataset=dict(ann_file=ann_file, split='train1')),
    val=dict(ann_file=ann_file, split='test1'),
    test=dict(ann_file=ann_file, split='test1'))
optimizer = dict(weight_decay=0.0001)
work_dir = './work_dirs/posestream/hmdb51_joint'
load_from = './work_dirs/posestream/k400_joint/best.pth'  # the Kinetics-400 joint model

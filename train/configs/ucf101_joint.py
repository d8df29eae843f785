# Pose-SlowOnly on UCF101 (split 1), joint heatmaps (J).
# Recipe: PYSKL's configs/posec3d/slowonly_r50_ucf101_k400p/s1_joint.py.
# Paper: UCF101 split 1, fine-tuned from Kinetics-400: 87.0 top-1 (paper Table 14; from scratch: 79.1, Table 5).
# PYSKL's k400-pretrained recipe (lr 0.01, step decay at epochs 9 and 11, 12 epochs, 48x48 training
# crops, 56x56 testing), with the paper's SlowOnly (stages 4, 6, 3) pretrained by this project's
# k400 config: load_from points at that run's best.pth. Set load_from = None to train from scratch.
# In PYSKL's config format. Train it with
#     posestream train ucf101_joint

_base_ = ['./_slowonly.py', './_k400p.py']
model = dict(cls_head=dict(num_classes=101))
ann_file = 'data/ucf101/ucf101_hrnet.pkl'
data = dict(
    train=dict(dataset=dict(ann_file=ann_file, split='train1')),
    val=dict(ann_file=ann_file, split='test1'),
    test=dict(ann_file=ann_file, split='test1'))
work_dir = './work_dirs/posestream/ucf101_joint'
load_from = './work_dirs/posestream/k400_joint/best.pth'  # the Kinetics-400 joint model

# Stage 2 of the shipped default model's recipe: 8 more epochs of synthetic_x3d_s at a lower
# learning rate, starting from stage 1's final weights (stage 1's 10-epoch cosine schedule ended
# at 84.8% validation top-1; this stage took it to 88.8%):
#     posestream train synthetic_x3d_s --threads 1                     (stage 1)
#     torchrun --nproc_per_node 2 -m posestream train synthetic_x3d_s_ft --threads 1   (stage 2)
# (2 processes of 1 thread each use both cores of a 2-core CPU; one process works the same.)
_base_ = ['./synthetic_x3d_s.py']
load_from = 'work_dirs/posestream/synthetic_x3d_s/epoch_10.pth'
optimizer = dict(type='AdamW', lr=0.0003, weight_decay=0.01)
lr_config = dict(policy='CosineAnnealing', by_epoch=False, min_lr=0, warmup='linear', warmup_iters=50,
                 warmup_ratio=0.1)
total_epochs = 8
work_dir = './work_dirs/posestream/synthetic_x3d_s_ft'

# Stage 4 of the shipped default model's recipe: the far broader generator (posestream.train.data
# .synthetic with physics falls, .served): children to large adults, shuffling to brisk walkers,
# simulated falls and resting postures, floor-level to ceiling cameras, telephoto to wide lenses,
# roll, 40 px to full-frame people, occluders, several score styles, and training on windows cut
# the way the runtime cuts them (posestream.train.data.served) as well as on whole clips.
#     posestream synth --families --clips 24000 --seed 0 --workers 2 --out data/families.pkl
#     torchrun --nproc_per_node 2 -m posestream train synthetic_x3d_s_families --threads 1
# Four families are held out of training (a ceiling-corner camera, large bodies, shuffling
# walkers, "push" falls; posestream.train.data.served.DEFAULT_HOLDOUT) and each has its own
# validation splits (val_<key>_<value>, and ..._served for the served windows), beside held-out
# subjects (val, val_served): `posestream test ... --split val_camera_corner` etc.
# It starts from stage 3's weights (the previously shipped model), at a moderate learning rate.
_base_ = ['./synthetic_x3d_s_ft.py']
ann_file = 'data/families.pkl'
data = dict(
    train=dict(dataset=dict(ann_file=ann_file)),
    val=dict(ann_file=ann_file, split='val'),
    test=dict(ann_file=ann_file, split='val'))
load_from = 'work_dirs/posestream/synthetic_x3d_s_extra/epoch_6.pth'
optimizer = dict(type='AdamW', lr=0.0005, weight_decay=0.01)
lr_config = dict(warmup_iters=150)
total_epochs = 1
work_dir = './work_dirs/posestream/synthetic_x3d_s_families'

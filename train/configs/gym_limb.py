# Pose-SlowOnly on FineGYM-99, limb heatmaps (L) in PYSKL's released limb order.
# Recipe: PYSKL's configs/posec3d/slowonly_r50_gym/limb.py.
# Paper: FineGYM-99: 93.2 (J), 94.3 (J + L) mean class top-1 (paper Table 3); PYSKL's release: 93.8 / 93.8.
# In PYSKL's config format. Train it with
#     posestream train gym_limb

_base_ = ['./gym_joint.py', './_limb.py']
work_dir = './work_dirs/posestream/gym_limb'

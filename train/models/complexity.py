"""Parameter and multiply-add counts, and the paper's figures to compare them with.

Conventions (those of the paper's Tables 2 and 6):
- "FLOPs" in the paper are multiply-adds (MACs). ``gmacs`` here counts the multiply-adds of the
  convolution (incl. transposed) and linear layers for one sample, in units of 1e9, with
  ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per multiply-add and only
  those layers: BN, ReLU, pooling and additions are not counted), divided by 2. The final fc
  is included; it adds at most ~0.0001 G.
- The paper's parameter counts exclude the final fc (it depends on the number of classes):
  compare ``params_no_fc`` with them; ``params`` counts everything.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .zoo import build_model

# The paper's figures: Table 2 (NTU60-XSub variants), Sec. 4.4.3 (Volleyball).
PAPER_TABLE: dict[str, dict] = {
    "slowonly": dict(paper_name="SlowOnly", params=2.0e6, gmacs=15.9),
    "slowonly_hr": dict(paper_name="SlowOnly-HR", params=8.0e6, gmacs=73.0),
    "slowonly_wd": dict(paper_name="SlowOnly-wd", params=7.9e6, gmacs=54.9),
    "c3d": dict(paper_name="C3D", params=6.9e6, gmacs=25.2),
    "c3d_s": dict(paper_name="C3D-s", params=3.4e6, gmacs=16.8),
    "x3d": dict(paper_name="X3D", params=531e3, gmacs=1.1),
    "x3d_s": dict(paper_name="X3D-s", params=241e3, gmacs=0.6),
    "slowonly_volleyball": dict(paper_name="SlowOnly (Volleyball, width 16)", params=0.52e6, gmacs=1.6),
}


def _fc_params(model: nn.Module) -> int:
    head = getattr(model, "head", None)
    if head is None:
        return 0
    return sum(p.numel() for m in head.modules() if isinstance(m, nn.Linear) for p in m.parameters())


def model_complexity(name_or_model: str | nn.Module, input_shape=None, device: str = "meta") -> dict:
    """``{"params", "params_no_fc", "gmacs"}`` of a model (or a ``build_model`` name).

    ``input_shape`` is one sample's ``(C, T, H, W)`` (for RGBPose-Conv3D a pair of them); by
    default the model's ``paper_input_shape``. The count runs on the ``meta`` device by default:
    the same operator shapes, hence the same count, as on CPU, without doing the arithmetic
    (SlowOnly-HR at 112 x 112 takes ~10 s on two CPU cores otherwise); pass ``device="cpu"`` to
    run it for real. The model given is not modified.
    """
    if isinstance(name_or_model, str):
        with torch.device(device):
            model = build_model(name_or_model)
    else:
        model = copy.deepcopy(name_or_model).to(device)
    if input_shape is None:
        input_shape = model.paper_input_shape
    shapes = input_shape if isinstance(input_shape[0], (tuple, list)) else (input_shape,)
    inputs = [torch.zeros(1, *s, device=device) for s in shapes]
    params = sum(p.numel() for p in model.parameters())
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*inputs)
    return {
        "params": params,
        "params_no_fc": params - _fc_params(model),
        "gmacs": counter.get_total_flops() / 2 / 1e9,
    }

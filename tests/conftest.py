import contextlib, io, os, sys

import matplotlib
matplotlib.use('Agg')
import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path: sys.path.insert(0, ROOT)


@contextlib.contextmanager
def quiet():
    "Silence what training prints (progress bars and the epoch table); yields the captured text."
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): yield buf


@pytest.fixture
def make_learner(tmp_path):
    "Factory for a small learner on synthetic data (CPU), writing under tmp_path."
    from fastcb_nb.learner import Learner, synthetic_data, CrossEntropyFlat
    def _make(n_train=128, n_valid=64, bs=32, hidden=16, seed=0, **kwargs):
        torch.manual_seed(seed)
        data = synthetic_data(n_train=n_train, n_valid=n_valid, bs=bs, device='cpu', seed=seed)
        model = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        kwargs.setdefault('loss_func', CrossEntropyFlat())
        kwargs.setdefault('path', tmp_path)
        return Learner(data, model, **kwargs)
    return _make

import os, sys

import matplotlib
matplotlib.use('Agg')
import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path: sys.path.insert(0, ROOT)


from fastcb_nb.testing import quiet, tiny_learner   # noqa: E402  (the shared test helpers)


@pytest.fixture
def make_learner(tmp_path):
    "Factory for a small learner on synthetic data (CPU), writing under tmp_path."
    def _make(n_train=128, n_valid=64, bs=32, hidden=16, seed=0, **kwargs):
        kwargs.setdefault('path', tmp_path)
        return tiny_learner(n_train, n_valid, bs, hidden=hidden, seed=seed, **kwargs)
    return _make

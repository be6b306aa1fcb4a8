"""Tasks for the learning-rate-suggestion benchmark (`bench/lr_suggestions.py`).

Each task is a small data set (scikit-learn's bundled ones, which load offline, or synthetic ones generated here), a
model factory, an optimizer, a loss, a number of one-cycle epochs and a grid of 12 log-spaced `max_lr` values.
`Task.finder_curve(f, d)` runs `lr_find` (default arguments) and returns the recorded rates and smoothed losses;
`Task.final_loss(lr, d)` trains a fresh model with `fit_one_cycle(epochs, lr)` and returns the final validation loss.

Seeds: "data order" `d` (0 or 1) seeds the model's initial weights and the order of the training batches of the
`fit_one_cycle` run; finder run `f` (0 or 1) seeds the order of the batches that `lr_find` sees, on the same initial
weights as the fit that follows it (as in the usual workflow: create the learner, `lr_find`, then fit). Everything is
deterministic on one thread.
"""
import contextlib, functools, io, math, os, sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from fastcb_nb.learner import Learner, DataBunch, CrossEntropyFlat, MSELossFlat, AdamW  # noqa: E402
import fastcb_nb.schedule  # noqa: E402,F401  (adds Learner.lr_find and Learner.fit_one_cycle)

SGD = functools.partial(torch.optim.SGD, momentum=0.9)


class Loader:
    "Batches of `(x[idx], y[idx])`; reshuffled each epoch from its own generator (`reseed` sets it); drops the last partial training batch."
    def __init__(self, x, y, bs, shuffle):
        self.x, self.y, self.bs, self.shuffle = x, y, bs, shuffle
        self.g = torch.Generator().manual_seed(0)

    def reseed(self, seed: int) -> None: self.g.manual_seed(seed)
    def __len__(self): return len(self.x) // self.bs if self.shuffle else -(-len(self.x) // self.bs)

    def __iter__(self):
        idx = torch.randperm(len(self.x), generator=self.g) if self.shuffle else torch.arange(len(self.x))
        for i in range(len(self)):
            j = idx[i * self.bs:(i + 1) * self.bs]
            yield self.x[j], self.y[j]


def _split(x, y, n_valid, seed=0, standardize=True, y_standardize=False):
    "Fixed train/valid split; inputs (and optionally targets) standardized with training statistics."
    g = torch.Generator().manual_seed(seed)
    p = torch.randperm(len(x), generator=g)
    va, tr = p[:n_valid], p[n_valid:]
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    xtr, xva, ytr, yva = x[tr], x[va], y[tr], y[va]
    if standardize:
        m, s = xtr.mean(0), xtr.std(0) + 1e-6
        xtr, xva = (xtr - m) / s, (xva - m) / s
    if y_standardize:
        ytr, yva = ytr.float(), yva.float()
        m, s = ytr.mean(0), ytr.std(0)
        ytr, yva = (ytr - m) / s, (yva - m) / s
    return xtr, ytr, xva, yva


def _mlp(sizes, bn=False):
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b)] + ([nn.BatchNorm1d(b)] if bn else []) + [nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def _bn_convnet(n_out=10):
    "A small convnet with BatchNorm for 8x8 one-channel images."
    def block(a, b, stride): return [nn.Conv2d(a, b, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), *block(1, 16, 1), *block(16, 32, 2), *block(32, 64, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_out))


# -- data sets ---------------------------------------------------------------------------------------------------
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return _split(d.data / 16., d.target, 397, standardize=False)

def breast_cancer():
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer()
    return _split(d.data, d.target, 169)

def wine():
    from sklearn.datasets import load_wine
    d = load_wine()
    return _split(d.data, d.target, 58)

def diabetes():
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    return _split(d.data, d.target[:, None], 142, y_standardize=True)

def synth_regression(n=2000, n_in=10, seed=1):
    "Smooth nonlinear regression: y = sin(x·w1) + 0.5·(x·w2)^2/n_in + noise, standardized."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    w1, w2 = torch.randn(n_in, generator=g) / math.sqrt(n_in), torch.randn(n_in, generator=g)
    y = torch.sin(2 * x @ w1) + 0.5 * (x @ w2) ** 2 / n_in + 0.1 * torch.randn(n, generator=g)
    return _split(x, y[:, None], 500, y_standardize=True)

def synth_spirals(n=2000, n_class=3, seed=2):
    "Interleaved noisy spirals in 2-d, embedded in 8-d with 6 noise dimensions."
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_class, (n,), generator=g)
    r = torch.rand(n, generator=g)
    t = 2 * math.pi * y / n_class + 3 * r + 0.25 * torch.randn(n, generator=g)
    x = torch.stack([r * torch.cos(t), r * torch.sin(t)], 1)
    x = torch.cat([x, 0.5 * torch.randn(n, 6, generator=g)], 1)
    return _split(x, y, 500)


class Task:
    def __init__(self, name, data, model, opt_func, loss_func, epochs, bs, grid, wd=1e-2):
        self.name, self._data, self.model, self.opt_func, self.loss_func = name, data, model, opt_func, loss_func
        self.epochs, self.bs, self.grid, self.wd = epochs, bs, np.asarray(grid, dtype=np.float64), wd
        self._dl = None

    def dls(self):
        if self._dl is None:
            xtr, ytr, xva, yva = self._data()
            self._dl = Loader(xtr, ytr, self.bs, True), Loader(xva, yva, 512, False)
        return self._dl

    def learner(self, d: int) -> Learner:
        torch.manual_seed(1000 + d)
        tr, va = self.dls()
        return Learner(DataBunch(tr, va, device='cpu'), self.model(), opt_func=self.opt_func,
                       loss_func=self.loss_func(), wd=self.wd, silent=True)

    def untrained_loss(self, d: int = 0) -> float:
        with _quiet(): return float(self.learner(d).validate()[0])

    def finder_curve(self, f: int, d: int, valid=False):
        "`(lrs, losses)` recorded by `lr_find(valid=valid)` (defaults: 1e-7 to 10, 100 steps, stop on divergence)."
        learn = self.learner(d)
        self.dls()[0].reseed(100 + f)
        with _quiet(): learn.lr_find(valid=valid)
        return np.array(learn.recorder.lrs, dtype=np.float64), np.array(learn.recorder.losses, dtype=np.float64)

    def final_loss(self, lr: float, d: int) -> float:
        "Final validation loss of `fit_one_cycle(epochs, lr)` from the initial weights of data order `d`."
        learn = self.learner(d)
        self.dls()[0].reseed(200 + d)
        with _quiet(), np.errstate(all='ignore'):
            try: learn.fit_one_cycle(self.epochs, float(lr))
            except (RuntimeError, ValueError, OverflowError): return float('nan')
            loss = learn.validate()[0]
        return float(loss)


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()): yield


def grid(lo, hi, n=12): return np.logspace(math.log10(lo), math.log10(hi), n)

CE, MSE = CrossEntropyFlat, MSELossFlat

TASKS = [
    Task('digits_mlp_adam', digits, lambda: _mlp([64, 128, 10]), AdamW, CE, 3, 64, grid(1e-4, 3)),
    Task('digits_bnconv_sgd', digits, _bn_convnet, SGD, CE, 3, 64, grid(1e-3, 30)),
    Task('digits_bnconv_adam', digits, _bn_convnet, AdamW, CE, 3, 64, grid(1e-4, 3)),
    Task('cancer_mlp_adam', breast_cancer, lambda: _mlp([30, 16, 2]), AdamW, CE, 4, 32, grid(1e-4, 3), wd=0.1),
    Task('wine_mlp_sgd', wine, lambda: _mlp([13, 32, 3]), SGD, CE, 6, 16, grid(1e-4, 3)),
    Task('diabetes_mlp_adam', diabetes, lambda: _mlp([10, 64, 64, 1]), AdamW, MSE, 4, 32, grid(1e-4, 3)),
    Task('synreg_mlp_sgd', synth_regression, lambda: _mlp([10, 64, 64, 1]), SGD, MSE, 4, 64, grid(1e-4, 3)),
    Task('spirals_mlp_adam', synth_spirals, lambda: _mlp([8, 64, 64, 64, 3]), AdamW, CE, 5, 64, grid(1e-4, 3)),
]


# -- held-out tasks: used only to check that a rule chosen on TASKS generalises (`lr_suggestions.py --heldout`) ----
def iris():
    from sklearn.datasets import load_iris
    d = load_iris()
    return _split(d.data, d.target, 50)

def moons(n=1500, seed=3):
    from sklearn.datasets import make_moons
    x, y = make_moons(n, noise=0.25, random_state=seed)
    return _split(x, y, 500)

def synth_linear(n=1500, n_in=20, seed=4):
    "Linear regression with noise, standardized target."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    y = x @ torch.randn(n_in, generator=g) + 0.5 * torch.randn(n, generator=g)
    return _split(x, y[:, None], 500, y_standardize=True)

def synth_blobs(n=3000, n_in=20, n_class=5, seed=5):
    "Overlapping Gaussian blobs in 20-d (sklearn's make_classification)."
    from sklearn.datasets import make_classification
    x, y = make_classification(n, n_in, n_informative=8, n_classes=n_class, n_clusters_per_class=2,
                               class_sep=1.0, random_state=seed)
    return _split(x, y, 800)

def _convnet_nobn(n_out=10):
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16, n_out))

SGD0 = functools.partial(torch.optim.SGD, momentum=0.)

HELDOUT = [
    Task('iris_mlp_adam', iris, lambda: _mlp([4, 32, 3]), AdamW, CE, 10, 16, grid(1e-4, 3)),
    Task('digits_mlp_sgd', digits, lambda: _mlp([64, 128, 64, 10]), SGD, CE, 4, 32, grid(1e-3, 10)),
    Task('digits_bnmlp_adam', digits, lambda: _mlp([64, 128, 128, 10], bn=True), AdamW, CE, 3, 64, grid(1e-4, 3)),
    Task('digits_conv_adam', digits, _convnet_nobn, AdamW, CE, 3, 64, grid(1e-4, 3)),
    Task('moons_mlp_sgd', moons, lambda: _mlp([2, 64, 64, 2]), SGD, CE, 5, 32, grid(1e-3, 10)),
    Task('linreg_adam', synth_linear, lambda: _mlp([20, 1, 1])[:1], AdamW, MSE, 3, 32, grid(1e-4, 3)),
    Task('blobs_mlp_adam_bs256', synth_blobs, lambda: _mlp([20, 128, 128, 5]), AdamW, CE, 8, 256, grid(1e-4, 3)),
    Task('cancer_logreg_sgd0', breast_cancer, lambda: nn.Linear(30, 2), SGD0, CE, 5, 16, grid(1e-3, 30)),
    Task('diabetes_mlp_sgd', diabetes, lambda: _mlp([10, 64, 1]), SGD, MSE, 6, 16, grid(1e-4, 3)),
    Task('wine_mlp_adam', wine, lambda: _mlp([13, 64, 64, 3]), AdamW, CE, 8, 16, grid(1e-4, 3)),
]

"""The fastai v1 callback training loop for PyTorch, with live Jupyter widgets

Modules:

- `fastcb_nb.callback`: `Callback`, the `CallbackHandler` that runs them and keeps the shared training state, `AverageMetric`, and the optimizer facade `OptimWrapper`."""

__version__ = "0.1.0"


def load_ipython_extension(ipython):
    "`%load_ext fastcb_nb`: register the `%lr_find` and `%fit_one_cycle` magics."
    from .magics import load_ipython_extension as _load
    _load(ipython)

"""The fastai v1 callback training loop for PyTorch, with live Jupyter widgets

Modules:

- `fastcb_nb.callback`: `Callback`, the `CallbackHandler` that runs them and keeps the shared training state, `AverageMetric`, and the optimizer facade `OptimWrapper`.
- `fastcb_nb.callbacks`: Training callbacks: gradient clipping, frozen BatchNorm, gradient accumulation, trackers (early stopping, saving the best model, reducing the learning rate on a plateau), a CSV logger, and mixed precision with `torch.amp`.
- `fastcb_nb.demo`: `fastcb-demo` (or `python -m fastcb_nb.demo`): find a learning rate, train with the one-cycle policy and save the plots, on built-in synthetic data, in a plain terminal.
- `fastcb_nb.distributed`: Training on a GPU without needless host syncs, and data-parallel training over several processes with `torch.distributed`: `Learner.to_distributed`, `DistributedTrainer`, `setup_distrib` and `launch`.
- `fastcb_nb.progress`: Progress bars that suit where the output goes: fastprogress's notebook bars in a notebook, console bars that leave no fragments in a terminal, and no bars at all (one line per epoch) in a file or a pipe.
- `fastcb_nb.schedule`: The learning-rate finder (`LRFinder`, `lr_find`) and its suggestion rules, and hyper-parameter schedules: phases (`TrainingPhase`, `GeneralScheduler`, `fit_fc`) and the one-cycle policy (`OneCycleScheduler`, `fit_one_cycle`), with a preview that computes a schedule without training.
- `fastcb_nb.widgets`: The notebook layer: the live training panel (`ShowGraph`), the lr-finder picker and the one-cycle preview, built from core ipywidgets and matplotlib figures rendered to PNG."""

__version__ = "0.1.0"


def load_ipython_extension(ipython):
    "`%load_ext fastcb_nb`: register the `%lr_find` and `%fit_one_cycle` magics."
    from .magics import load_ipython_extension as _load
    _load(ipython)

"""The fastai v1 callback training loop for PyTorch, with live Jupyter widgets

Modules:

- `fastcb_nb.backup`: `BackupAndRestore`: a run that was interrupted (Ctrl-C, the Stop button, an exception, a killed process) continues where it stopped when the same call is made again, and ends exactly as if nothing had happened.
- `fastcb_nb.callback`: `Callback` and its ten events, the `CallbackHandler` that runs them and keeps the shared training state, `LearnerCallback`, and `AverageMetric`.
- `fastcb_nb.callbacks`: Training callbacks: gradient clipping, frozen BatchNorm, gradient accumulation, stopping on NaN and a CSV logger; the module also gathers the trackers and mixed precision (`from fastcb_nb.callbacks import *`).
- `fastcb_nb.canvas`: What every widget of the notebook layer is drawn with: matplotlib figures rendered to PNG bytes for an `ipywidgets.Image`, and the few kernel helpers the widgets share.
- `fastcb_nb.core`: Small utilities the rest of the library is built on: naming, list handling, argument checks, smoothing, annealing and `Scheduler`.
- `fastcb_nb.data`: `DataBunch`: the training, validation and test `DataLoader`s and the device their batches go to; `DatasetType`, `DataBunch.create` from datasets, `one_batch`; synthetic data for examples, tests and the demo.
- `fastcb_nb.demo`: `fastcb-demo` (or `python -m fastcb_nb.demo`): find a learning rate, train with the one-cycle policy and save the plots, on built-in synthetic data, in a plain terminal.
- `fastcb_nb.distributed`: Training on a GPU without needless host syncs, and data-parallel training over several processes with `torch.distributed`: `Learner.to_distributed`, `DistributedTrainer`, `setup_distrib` and `launch`.
- `fastcb_nb.hooks`: Looking inside a model, as in fastai v1: module helpers (`flatten_model`, `requires_grad`, ...), forward and backward hooks (`Hook`, `Hooks`, `hook_output(s)`), `HookCallback` and `ActivationStats`, `model_sizes`, `learn.summary()` and `learn.split(...)`.
- `fastcb_nb.inference`: Predictions from a trained learner, as in fastai v1: `get_preds` over a whole set, `pred_batch` for one batch, `predict` for one item, and the activation each loss function implies.
- `fastcb_nb.learner`: `Learner`: data, model, loss, optimizer and callbacks together; `fit`/`afit`, `validate`, freezing, `save`/`load`, `export`/`load_learner`.
- `fastcb_nb.loop`: The training loop: `loss_batch`, `validate_loop`, `fit_loop`; running it synchronously or from a coroutine; and `entry_point`, which turns one definition of a training entry point into its synchronous and awaitable forms.
- `fastcb_nb.losses`: fastai v1's flattened losses: `CrossEntropyFlat` and `MSELossFlat` flatten output and target before the torch loss, so models with extra dimensions (sequences, pixels) train with the usual losses.
- `fastcb_nb.lr_finder`: The learning-rate finder: `LRFinder` and `lr_find` (with `alr_find`), on the training or the validation loss, and the rules that suggest a rate from its curve (`descent` by default, chosen by a benchmark).
- `fastcb_nb.magics`: The IPython line magics `%lr_find` and `%fit_one_cycle`: the lr-finder / one-cycle workflow in one line each; `%callbacks` shows what a fit would call.
- `fastcb_nb.metrics`: Metrics: functions `(output, target) -> value` that the training loop averages over the validation set, and callback metrics that accumulate over the whole set (confusion-matrix scores, regression scores, multi-label F).
- `fastcb_nb.misc`: `StopAfterNBatches`: stop training after a given number of training batches (to try a model or a callback quickly).
- `fastcb_nb.mixup`: MixUp as in fastai v1: `MixUpCallback` mixes pairs of training inputs and their targets, `MixUpLoss` computes the loss of the mixed targets, `learn.mixup()` turns it on.
- `fastcb_nb.optim`: The optimizer facade `OptimWrapper`: a torch optimizer over layer groups, with fastai v1's `lr`, `mom`, `beta` and `wd` hyper-parameters and true weight decay.
- `fastcb_nb.panel`: The live training panel: `TrainingPanel` (progress, loss plot, Stop button) and the `ShowGraph` callback that drives it.
- `fastcb_nb.picker`: The lr-finder picker: after `lr_find`, choose a learning rate on the loss curve with a log slider or a suggested rate, and hand it to the next `fit`.
- `fastcb_nb.preview`: The one-cycle preview: sliders over `fit_one_cycle`'s parameters, the exact per-batch learning rate and momentum they give, and a Train button.
- `fastcb_nb.progress`: Progress bars that suit where the output goes: fastprogress's notebook bars in a notebook, console bars that leave no fragments in a terminal, and no bars at all (one line per epoch) in a file or a pipe.
- `fastcb_nb.recorder`: The `Recorder`: the history of a training run (learning rates, momentums, smoothed losses, validation losses, metrics), the epoch table, and fastai v1's four plots.
- `fastcb_nb.schedule`: Hyper-parameter schedules: phases (`TrainingPhase`, `GeneralScheduler`, `fit_fc`) and the one-cycle policy (`OneCycleScheduler`, `fit_one_cycle`), with a preview that computes a schedule without training.
- `fastcb_nb.tensorboard`: `LearnerTensorboardWriter`: the training loss, validation loss and metrics, weight histograms, gradient statistics, the model graph and embeddings, written as TensorBoard event files through `torch.utils.tensorboard`.
- `fastcb_nb.testing`: Helpers for the examples, tests, benchmarks and the demo: a tiny learner on synthetic data, scripted losses, a callback that raises at a chosen event, and quiet output.
- `fastcb_nb.trace`: Seeing the callback system: `learn.show_callbacks()` lists what each event of a `fit` would call, in order and with where each callback comes from; `EventTrace` records what a run really called, who stopped it, and which callbacks made it slow.
- `fastcb_nb.tracker`: Callbacks that follow a loss or metric from epoch to epoch: early stopping, saving the best model, reducing the learning rate on a plateau.
- `fastcb_nb.widgets`: The notebook layer: the live training panel (`ShowGraph`), the lr-finder picker and the one-cycle preview, built from core ipywidgets and matplotlib figures rendered to PNG."""

__version__ = "0.1.0"

# The chapters that add methods to `Learner` and `Recorder` (lr_find, fit_one_cycle, fit_fc, clip_grad, to_fp16,
# get_preds/pred_batch/predict, summary/split, mixup, show_callbacks, to_distributed, the picker) are gathered here,
# at the top of the package: the learner never imports them (they import it), yet `from fastcb_nb.learner import
# Learner` gives the whole API, because importing any module of the package runs this first.
from . import lr_finder, schedule, callbacks, inference, hooks, mixup, trace, backup, distributed, widgets  # noqa: E402,F401


def load_ipython_extension(ipython):
    "`%load_ext fastcb_nb`: register the `%lr_find` and `%fit_one_cycle` magics."
    from .magics import load_ipython_extension as _load
    _load(ipython)

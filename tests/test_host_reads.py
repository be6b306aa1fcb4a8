"""Host reads per training batch (issue 16): every read of a tensor's value on the host (`.item()`, `float(t)`,
`bool(t)`) goes through `aten._local_scalar_dense`, which a `TorchDispatchMode` counts on the CPU as well as on a GPU
(where each one is a sync). A training batch of `fit` and `fit_one_cycle` makes none; `lr_find` makes one (its
divergence test), none with `stop_div=False`. Reads of a progress-bar redraw, of torch's optimizer step (Adam reads
its CPU step counter) and of torch's `GradScaler` (float16) are told apart by where they come from and counted
separately."""
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastcb_nb.callback import Callback
from fastcb_nb.metrics import accuracy
from fastcb_nb.losses import CrossEntropyFlat
from fastcb_nb.callbacks import GradientClipping, AccumulateScheduler, TerminateOnNaNCallback, CSVLogger
from fastcb_nb.tracker import EarlyStoppingCallback, ReduceLROnPlateauCallback
from fastcb_nb import progress
from fastcb_nb.testing import tiny_learner, quiet, Probe


def origin(stack) -> str:
    "Who made a host read: 'redraw' (a progress bar's loss text), 'optimizer' (torch's step), 'scaler', or 'loop'."
    files = ' '.join(f'{f.filename}:{f.name}' for f in stack)
    if '_LossComment' in files or 'fastprogress' in files: return 'redraw'
    if 'amp/grad_scaler' in files: return 'scaler'
    if 'torch/optim/' in files: return 'optimizer'
    return 'loop'


class CountReads(TorchDispatchMode):
    "Count `_local_scalar_dense` calls while `on` is set, by origin, in `batches[-1]`."
    def __init__(self):
        super().__init__()
        self.on, self.batches = False, []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.on and func is torch.ops.aten._local_scalar_dense.default:
            who = origin(traceback.extract_stack()[:-1])
            self.batches[-1][who] = self.batches[-1].get(who, 0) + 1
        return func(*args, **(kwargs or {}))


def reads_per_batch(learn, run, callbacks=()):
    "Run `run(learn, callbacks)` counting the host reads of each training batch (batch_begin to batch_end)."
    mode = CountReads()
    def start(train, **kw):
        if train: mode.batches.append({}); mode.on = True
    def stop(**kw): mode.on = False
    probes = [Probe('on_batch_begin', start, order=-10 ** 6), Probe('on_batch_end', stop, order=10 ** 6)]
    with mode: run(learn, list(callbacks) + probes)
    return mode.batches


def total(batches, who='loop'): return [b.get(who, 0) for b in batches]


FIT = lambda learn, cbs: learn.fit(2, 1e-2, callbacks=cbs)
ONE_CYCLE = lambda learn, cbs: learn.fit_one_cycle(2, 1e-2, callbacks=cbs)


@pytest.mark.parametrize('name,run', [('fit', FIT), ('fit_one_cycle', ONE_CYCLE)])
@pytest.mark.parametrize('setup', ['plain', 'metrics', 'clipping', 'accumulate', 'bf16', 'trackers', 'everything'])
def test_no_host_read_in_a_training_batch(name, run, setup, tmp_path):
    kwargs = dict(metrics=[accuracy]) if setup in ('metrics', 'everything') else {}
    learn = tiny_learner(path=tmp_path, silent=True, **kwargs)
    cbs = []
    if setup in ('clipping', 'everything'): learn.clip_grad(1.)
    if setup in ('accumulate', 'everything'):
        learn.loss_func = CrossEntropyFlat(reduction='sum'); cbs.append(AccumulateScheduler(learn, n_step=2))
    if setup in ('bf16', 'everything'): learn.to_fp16(dtype='bfloat16')
    if setup in ('trackers', 'everything'):
        learn.callbacks += [EarlyStoppingCallback(learn), ReduceLROnPlateauCallback(learn), CSVLogger(learn)]
    with quiet(): batches = reads_per_batch(learn, run, cbs)
    assert len(batches) == 8 and total(batches) == [0] * 8, batches


def test_progress_output_reads_only_at_redraws(monkeypatch):
    "Console bars in a terminal: the loss text is read when a bar is drawn (between batches), a few times an epoch."
    monkeypatch.setattr(progress, 'progress_kind', lambda stream=None: 'console')
    learn = tiny_learner(n_train=512, bs=16)
    with quiet(): batches = reads_per_batch(learn, FIT)
    assert len(batches) == 64 and total(batches) == [0] * 64          # inside the training batches: none
    whole = CountReads(); whole.on, whole.batches = True, [{}]
    with quiet(), whole: FIT(learn, [])
    assert 0 < whole.batches[0].get('redraw', 0) < 64 / 2, whole.batches  # the whole fit: a read at each redraw


def test_lr_find_reads_once_per_step():
    learn = tiny_learner(n_train=256, bs=16, silent=True)
    with quiet(): batches = reads_per_batch(learn, _lr_find)
    assert len(batches) == 20 and total(batches) == [1] * 20


def test_lr_find_without_stop_div_reads_none_per_step():
    "Nothing decides on the loss: the curve is read back at the end, in one transfer, and is the same curve."
    curves = []
    for stop_div in (True, False):
        learn = tiny_learner(n_train=256, bs=16, silent=True)
        with quiet(): batches = reads_per_batch(learn, lambda learn, cbs: _lr_find(learn, cbs, stop_div=stop_div))
        assert len(batches) == 20 and total(batches) == [1 if stop_div else 0] * 20
        curves.append((learn.recorder.lrs, learn.recorder.losses, learn.lr_finder.best_loss))
    assert curves[0] == curves[1]


def _lr_find(learn, cbs, **kwargs):
    "lr_find with extra callbacks (the probes): lr_find itself takes none, so put them in learn.callbacks."
    learn.callbacks += cbs
    try: learn.lr_find(num_it=20, **kwargs)
    finally:
        for cb in cbs: learn.callbacks.remove(cb)


def test_what_terminate_on_nan_costs():
    "Skipping a non-finite step before it is applied needs the loss on the host: one read per training batch."
    learn = tiny_learner(silent=True, callbacks=[TerminateOnNaNCallback()])
    with quiet(): batches = reads_per_batch(learn, FIT)
    assert total(batches) == [1] * 8


def test_float16_adds_only_torchs_gradscaler_read():
    learn = tiny_learner(silent=True).to_fp16(dtype='float16')
    with quiet(): batches = reads_per_batch(learn, FIT)
    assert total(batches) == [0] * 8 and all(b.get('scaler', 0) >= 1 for b in batches)


def test_the_counter_sees_a_read():
    "The counting itself works: a callback that reads the loss is counted in the loop's column."
    class Reads(Callback):
        def on_backward_begin(self, last_loss, **kw): last_loss.item()
    learn = tiny_learner(silent=True)
    with quiet(): batches = reads_per_batch(learn, FIT, [Reads()])
    assert total(batches) == [1] * 8


@pytest.mark.parametrize('every', ['epoch', 3])
def test_backup_and_restore_reads_nothing_in_a_batch_but_at_its_backups(every, tmp_path):
    from fastcb_nb.backup import BackupAndRestore
    learn = tiny_learner(path=tmp_path, silent=True)
    with quiet(): batches = reads_per_batch(learn, ONE_CYCLE, [BackupAndRestore(learn, every=every)])
    reads = total(batches)
    if every == 'epoch': assert reads == [0] * 8, batches
    else:   # a backup (after batches 3 and 6) reads the losses not read yet, in one transfer
        assert [r for i, r in enumerate(reads) if (i + 1) % 3] == [0] * 6 and all(r <= 1 for r in reads), batches

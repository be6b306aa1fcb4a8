"End-to-end tests of the training callbacks (`fastcb_nb.callbacks`): clipping, BnFreeze, accumulation, trackers, CSV logging, mixed precision."
import asyncio, contextlib, functools, io, math, sys, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fastcb_nb.core import *
from fastcb_nb.callback import *
from fastcb_nb.learner import *
from fastcb_nb.callbacks import *
from fastcb_nb.testing import Probe, RaiseAt, ScriptedLoss, quiet, tiny_learner as _tiny_learner


# -- helpers

def tiny_learner(**kwargs):
    "The shared tiny learner (64 training and 32 validation samples, batch 16), silent."
    kwargs.setdefault('silent', True)
    return _tiny_learner(**kwargs)

def fit(learn, *args, **kwargs):
    with quiet(): learn.fit(*args, **kwargs)

def weights(model): return [p.detach().clone() for p in model.parameters()]

def same(ws1, ws2, atol=0.): return all(torch.allclose(a, b, atol=atol, rtol=0) for a, b in zip(ws1, ws2))

def total_grad_norm(model):
    gs = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.norm(torch.stack([g.norm() for g in gs])).item()

def ordered_data(n, bs=None, batches=None, seed=0, n_valid=16):
    "Unshuffled data: batches of `bs`, or the index lists `batches` (for uneven batch sizes)."
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 8, generator=g), torch.randint(0, 2, (n,), generator=g)
    ds = torch.utils.data.TensorDataset(x, y)
    train = torch.utils.data.DataLoader(ds, batch_sampler=batches) if batches else \
        torch.utils.data.DataLoader(ds, batch_size=bs)
    xv, yv = torch.randn(n_valid, 8, generator=g), torch.randint(0, 2, (n_valid,), generator=g)
    valid = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, yv), batch_size=8)
    return DataBunch(train, valid, device='cpu')

class HugeLoss:
    def __call__(self, out, y): return nn.functional.cross_entropy(out, y) * 1e6

class BigLoss:
    def __call__(self, out, y): return nn.functional.cross_entropy(out, y) * 100

def scripted_metric(script, name='score'):
    "A metric whose value in the k-th validation batch is `script[k]`."
    it = iter(script)
    def f(out, y): return torch.tensor(next(it))
    f.__name__ = name
    return f

SEQ = [1.0, .9, .95, .91, .89, .92, .93, .94, .95, .96, .97, .98]    # V1_BEHAVIOUR.md §7

def scripted_learner(script=SEQ, **kwargs):
    "4 training batches and one validation batch per epoch; the validation loss of epoch k is `script[k]`."
    return tiny_learner(n_valid=16, loss_func=ScriptedLoss(valid=script), **kwargs)


# -- GradientClipping

def test_clipping_total_norm_equals_clip_on_huge_loss():
    learn = tiny_learner(loss_func=HugeLoss(), callback_fns=[functools.partial(GradientClipping, clip=0.25)])
    raw = Probe('on_backward_end', lambda **kw: total_grad_norm(learn.model), order=-100)
    clipped = Probe('on_backward_end', lambda **kw: total_grad_norm(learn.model))
    fit(learn, 2, 1e-3, callbacks=[raw, clipped])
    assert len(clipped.seen) == 8 and min(raw.seen) > 1e3
    assert all(abs(n - 0.25) < 1e-5 for n in clipped.seen)

def test_clip_zero_changes_nothing():
    ws = []
    for fns in ([], [GradientClipping]):
        learn = tiny_learner(loss_func=HugeLoss(), callback_fns=fns)
        fit(learn, 1, 1e-3)
        ws.append(weights(learn.model))
    assert same(*ws)

def test_clip_grad_adds_one_clipper_and_returns_learn():
    learn = tiny_learner()
    assert learn.clip_grad() is learn
    assert learn.callback_fns[-1].func is GradientClipping and learn.callback_fns[-1].keywords == {'clip': 0.1}
    learn.clip_grad(0.5)
    assert [f.keywords for f in learn.callback_fns if getattr(f, 'func', None) is GradientClipping] == [{'clip': 0.5}]
    fit(learn, 1, 1e-3)
    assert isinstance(learn.gradient_clipping, GradientClipping) and learn.gradient_clipping.clip == 0.5

@pytest.mark.parametrize('bad', [-0.1, float('nan'), 'x', None])
def test_clip_rejects_bad_values(bad):
    learn = tiny_learner()
    with pytest.raises(ValueError, match='clip'): GradientClipping(learn, bad)
    with pytest.raises(ValueError, match='clip'): learn.clip_grad(bad)

def test_clipping_waits_for_the_accumulated_sum():
    learn = tiny_learner(loss_func=HugeLoss())
    cbs = [AccumulateScheduler(learn, n_step=2), GradientClipping(learn, 0.5)]
    norms = Probe('on_backward_end', lambda skip_step, **kw: (skip_step, total_grad_norm(learn.model)))
    fit(learn, 1, 1e-3, callbacks=cbs + [norms])
    assert [s for s, _ in norms.seen] == [True, False, True, False]
    assert all(n > 1e3 for s, n in norms.seen if s)                  # accumulating: left alone
    assert all(abs(n - 0.5) < 1e-5 for s, n in norms.seen if not s)   # the step uses the clipped sum


# -- BnFreeze

def bn_model():
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.BatchNorm1d(16),
                         nn.ReLU(), nn.BatchNorm1d(16, affine=False), nn.Linear(16, 2))

def bn_stats(bn): return [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]

def test_bnfreeze_keeps_frozen_statistics_and_trains_the_rest():
    model = bn_model()
    frozen, live, no_affine = model[1], model[4], model[6]
    for p in frozen.parameters(): p.requires_grad_(False)
    learn = tiny_learner(model=model, callback_fns=[BnFreeze])
    before = [bn_stats(m) for m in (frozen, live, no_affine)]
    modes = Probe('on_batch_begin', lambda train, **kw: (train, frozen.training, live.training, no_affine.training))
    fit(learn, 2, 1e-2, callbacks=[modes])
    train_modes = [m[1:] for m in modes.seen if m[0]]
    assert len(train_modes) == 8 and all(m == (False, True, True) for m in train_modes)
    assert all(torch.equal(a, b) for a, b in zip(bn_stats(frozen), before[0]))
    assert not torch.equal(bn_stats(live)[0], before[1][0]) and not torch.equal(bn_stats(no_affine)[0], before[2][0])

def test_bnfreeze_with_train_bn_false_and_freeze():
    body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.BatchNorm1d(16, affine=False))
    head = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Linear(16, 2))
    learn = tiny_learner(model=nn.Sequential(body, head), layer_groups=[body, head], train_bn=False,
                         callback_fns=[BnFreeze])
    learn.freeze()
    assert set(map(id, frozen_bn_layers(learn))) == {id(body[1]), id(body[3])}   # affine=False follows its group
    before = [bn_stats(body[1]), bn_stats(body[3]), bn_stats(head[1])]
    fit(learn, 1, 1e-2)
    assert all(torch.equal(a, b) for a, b in zip(bn_stats(body[1]) + bn_stats(body[3]), before[0] + before[1]))
    assert not torch.equal(bn_stats(head[1])[0], before[2][0])
    learn.unfreeze()
    assert frozen_bn_layers(learn) == []

def test_bnfreeze_default_train_bn_changes_nothing():
    body, head = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16)), nn.Linear(16, 2)
    learn = tiny_learner(model=nn.Sequential(body, head), layer_groups=[body, head], callback_fns=[BnFreeze])
    learn.freeze()                       # train_bn=True: the BatchNorm parameters stay trainable
    assert frozen_bn_layers(learn) == []
    before = bn_stats(body[1])
    fit(learn, 1, 1e-2)
    assert not torch.equal(bn_stats(body[1])[0], before[0])


# -- AccumulateScheduler

def accumulate_learner(data, reduction='sum', **kwargs):
    learn = tiny_learner(loss_func=CrossEntropyFlat(reduction=reduction), opt_func=torch.optim.SGD, wd=0., **kwargs)
    learn.data = data
    return learn

def test_accumulate_step_pattern_and_remainder_at_epoch_end():
    learn = accumulate_learner(ordered_data(80, 16))
    flags = Probe('on_step_end', lambda skip_step, skip_zero, **kw: (skip_step, skip_zero))
    grads_kept = Probe('on_batch_end', lambda train, **kw: (learn.model[0].weight.grad is not None) if train else None)
    before_remainder = Probe('on_epoch_end', lambda **kw: weights(learn.model), order=-20)
    fit(learn, 2, 1e-2, callbacks=[AccumulateScheduler(learn, n_step=2), flags, grads_kept, before_remainder])
    assert flags.seen == [(True, True), (False, False), (True, True), (False, False), (True, True)] * 2
    assert [g for g in grads_kept.seen if g is not None] == [True, False, True, False, True] * 2
    # the fifth batch's gradients made one more step at the end of the epoch, then were cleared
    assert not same(weights(learn.model), before_remainder.seen[-1])
    assert all(p.grad is None for p in learn.model.parameters())

@pytest.mark.parametrize('drop_last', [False, True])
def test_accumulate_remainder_matches_a_smaller_last_batch(drop_last):
    # 5 batches of 8 with n_step=2 and a summed loss == batches of 16, 16, 8 (or 16, 16) with a mean loss
    n = 40
    acc = accumulate_learner(ordered_data(n, 8))
    fit(acc, 2, 0.1, callbacks=[AccumulateScheduler(acc, n_step=2, drop_last=drop_last)])
    groups = [list(range(0, 16)), list(range(16, 32))] + ([] if drop_last else [list(range(32, 40))])
    ref = accumulate_learner(ordered_data(n, batches=groups), reduction='mean')
    fit(ref, 2, 0.1)
    assert same(weights(acc.model), weights(ref.model), atol=1e-5)

@pytest.mark.parametrize('k,b', [(3, 8), (4, 4)])
def test_accumulate_equivalent_to_one_big_batch(k, b):
    acc = accumulate_learner(ordered_data(k * b * 2, b))
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        fit(acc, 2, 0.1, callbacks=[AccumulateScheduler(acc, n_step=k)])
    assert not any('reduction=sum' in str(w.message) for w in ws)
    ref = accumulate_learner(ordered_data(k * b * 2, k * b), reduction='mean')
    fit(ref, 2, 0.1)
    assert same(weights(acc.model), weights(ref.model), atol=1e-5)

def test_accumulate_warns_without_sum_reduction():
    learn = tiny_learner()
    with pytest.warns(UserWarning, match="reduction=sum"): fit(learn, 1, 1e-3, callbacks=[AccumulateScheduler(learn, 2)])

def test_accumulate_skips_params_without_grad_and_frozen_ones():
    class PartlyUsed(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused, self.frozen = nn.Linear(8, 2), nn.Linear(8, 2), nn.Linear(8, 2)
            self.frozen.requires_grad_(False)
        def forward(self, x): return self.used(x) + self.frozen(x)
    learn = accumulate_learner(ordered_data(48, 16), model=PartlyUsed())
    unused, frozen = weights(learn.model.unused), weights(learn.model.frozen)
    fit(learn, 2, 0.1, callbacks=[AccumulateScheduler(learn, n_step=2)])   # 3 batches: a remainder every epoch
    assert same(weights(learn.model.unused), unused) and same(weights(learn.model.frozen), frozen)

def test_accumulate_counts_only_training_samples():
    learn = accumulate_learner(ordered_data(48, 16, n_valid=40))
    acc = AccumulateScheduler(learn, n_step=2)
    samples = Probe('on_epoch_end', lambda **kw: acc.acc_samples, order=-20)   # before the remainder step
    fit(learn, 1, 0.1, callbacks=[acc, samples])
    assert samples.seen == [16]

@pytest.mark.parametrize('kw', [dict(n_step=0), dict(n_step=-2), dict(n_step=2.5), dict(n_step='2'),
                                dict(drop_last='yes')])
def test_accumulate_rejects_bad_arguments(kw):
    with pytest.raises(ValueError, match=list(kw)[0]): AccumulateScheduler(tiny_learner(), **kw)


# -- TerminateOnNaNCallback

class NaNAfter:
    "Cross entropy; NaN in training from the `n`-th training batch on (0-based)."
    def __init__(self, n): self.n, self.calls = n, 0
    def __call__(self, out, y):
        loss = nn.functional.cross_entropy(out, y)
        if not torch.is_grad_enabled(): return loss
        self.calls += 1
        return loss * float('nan') if self.calls > self.n else loss

def test_terminate_on_nan_training():
    learn = tiny_learner(loss_func=NaNAfter(4), callbacks=[TerminateOnNaNCallback()], silent=False)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): learn.fit(3, 1e-2)
    rec = learn.recorder
    assert rec.nb_batches == [4, 1] and rec.val_losses[0] is not None and rec.val_losses[1] is None
    assert 'Epoch/Batch (1/0): Invalid loss, terminating training.' in buf.getvalue()
    assert learn.callbacks[0].stop is True

def test_terminate_on_nan_in_validation():
    class NaNValid:
        def __call__(self, out, y):
            loss = nn.functional.cross_entropy(out, y)
            return loss if torch.is_grad_enabled() else loss * float('nan')
    learn = tiny_learner(n_valid=32, loss_func=NaNValid(), callbacks=[TerminateOnNaNCallback()])
    batches = Probe('on_batch_end', lambda train, **kw: train)
    fit(learn, 3, 1e-2, callbacks=[batches])
    assert learn.recorder.nb_batches == [4] and batches.seen == [True] * 4 + [False]   # validation stopped at once


# -- trackers

def epochs_run(**kwargs):
    learn = scripted_learner()
    fit(learn, 12, 1e-3, callbacks=[EarlyStoppingCallback(learn, **kwargs)])
    return len(learn.recorder.nb_batches)

def test_early_stopping_v1_epoch_counts():
    assert [epochs_run(patience=p) for p in (0, 1, 2)] == [3, 4, 8]
    assert epochs_run(patience=0, min_delta=0.05) == 3

def test_early_stopping_on_a_metric_without_time_column():
    learn = scripted_learner(script=[0.5] * 12, metrics=[scripted_metric([-v for v in SEQ])], add_time=False)
    es = EarlyStoppingCallback(learn, monitor='score', patience=2)
    assert es.operator is np.greater
    fit(learn, 12, 1e-3, callbacks=[es])
    assert learn.recorder.names == ['epoch', 'train_loss', 'valid_loss', 'score']
    assert len(learn.recorder.nb_batches) == 8 and es.best == pytest.approx(-0.89)

def test_early_stopping_prints():
    learn = scripted_learner(silent=False)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): learn.fit(12, 1e-3, callbacks=[EarlyStoppingCallback(learn, patience=1)])
    assert 'Epoch 3: early stopping' in buf.getvalue()

def test_tracker_unknown_monitor_raises_before_training():
    learn = scripted_learner(metrics=[accuracy])
    ws = weights(learn.model)
    with pytest.raises(ValueError, match="monitor must be one of .*'accuracy'"):
        fit(learn, 2, 1e-2, callbacks=[EarlyStoppingCallback(learn, monitor='acuracy')])
    assert same(weights(learn.model), ws)

@pytest.mark.parametrize('cls,kw', [(EarlyStoppingCallback, dict(mode='lowest')), (EarlyStoppingCallback, dict(patience=-1)),
                                    (EarlyStoppingCallback, dict(monitor='')), (SaveModelCallback, dict(every='batch')),
                                    (SaveModelCallback, dict(mode=None)), (ReduceLROnPlateauCallback, dict(factor=1)),
                                    (ReduceLROnPlateauCallback, dict(factor=0.)), (ReduceLROnPlateauCallback, dict(patience=-3)),
                                    (ReduceLROnPlateauCallback, dict(min_lr=-1.))])
def test_tracker_bad_arguments(cls, kw):
    with pytest.raises(ValueError, match=list(kw)[0]): cls(tiny_learner(), **kw)

def test_trackers_ignore_learner_validate():
    learn = scripted_learner(script=SEQ + [0.1])
    learn.callbacks = [EarlyStoppingCallback(learn), ReduceLROnPlateauCallback(learn)]
    fit(learn, 2, 1e-2)
    states = [cb.get_state() for cb in learn.callbacks]
    lr = learn.opt.lr
    learn.validate()                     # runs train_begin/epoch_end without training: not an epoch
    assert [cb.get_state() for cb in learn.callbacks] == states and learn.opt.lr == lr

def test_save_model_restores_best_epoch(tmp_path):
    learn = scripted_learner(path=tmp_path)
    snaps = Probe('on_epoch_end', lambda **kw: weights(learn.model))
    fit(learn, 8, 1e-2, callbacks=[SaveModelCallback(learn), snaps])
    assert same(weights(learn.model), snaps.seen[4]) and not same(weights(learn.model), snaps.seen[-1])
    assert (tmp_path / 'models' / 'bestmodel.pth').exists()

def test_save_model_ignores_stale_file(tmp_path):
    learn = scripted_learner(path=tmp_path)
    for p in learn.model.parameters(): nn.init.zeros_(p)
    learn.save('bestmodel')              # an earlier run's file
    learn = scripted_learner(path=tmp_path)
    with pytest.raises(RuntimeError, match='boom'):
        fit(learn, 3, 1e-2, callbacks=[SaveModelCallback(learn), RaiseAt(2)])   # interrupted before any save
    assert all(p.abs().sum() > 0 for p in learn.model.parameters())
    learn = scripted_learner(script=[float('nan')] * 3, path=tmp_path)
    fit(learn, 3, 1e-2, callbacks=[SaveModelCallback(learn)])                   # never improves: never saves
    assert all(p.abs().sum() > 0 for p in learn.model.parameters())

def test_save_model_restores_best_after_keyboard_interrupt(tmp_path):
    learn = scripted_learner(path=tmp_path)
    snaps = Probe('on_epoch_end', lambda **kw: weights(learn.model))
    with pytest.raises(KeyboardInterrupt):
        fit(learn, 5, 1e-2, callbacks=[SaveModelCallback(learn), snaps, RaiseAt(9, KeyboardInterrupt())])
    assert len(snaps.seen) == 2 and same(weights(learn.model), snaps.seen[1])   # epoch 1 (0.9) was the best

def test_save_model_every_epoch_and_jump(tmp_path):
    learn = scripted_learner(path=tmp_path)
    snaps = Probe('on_epoch_end', lambda **kw: weights(learn.model))
    fit(learn, 3, 1e-2, callbacks=[SaveModelCallback(learn, every='epoch', name='snap'), snaps])
    assert sorted(p.name for p in (tmp_path / 'models').glob('snap_*.pth')) == ['snap_0.pth', 'snap_1.pth', 'snap_2.pth']
    assert same(weights(learn.model), snaps.seen[-1])          # epoch mode loads nothing at the end
    cb = SaveModelCallback(learn, every='epoch', name='snap')
    cb.jump_to_epoch(2)
    assert same(weights(learn.model), snaps.seen[1])

def test_save_model_on_a_metric(tmp_path):
    learn = scripted_learner(script=[0.5] * 6, path=tmp_path, metrics=[scripted_metric([.1, .5, .3, .6, .2, .4], 'f1')])
    snaps = Probe('on_epoch_end', lambda **kw: weights(learn.model))
    fit(learn, 6, 1e-2, callbacks=[SaveModelCallback(learn, monitor='f1'), snaps])
    assert same(weights(learn.model), snaps.seen[3])

def test_reduce_lr_on_plateau_v1_rates():
    learn = scripted_learner(silent=False)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        learn.fit(10, 1e-2, callbacks=[ReduceLROnPlateauCallback(learn, patience=1, factor=0.5)])
    per_epoch = learn.recorder.lrs[::4]
    assert np.allclose(per_epoch, [.01] * 4 + [.005] * 3 + [.0025] * 2 + [.00125], rtol=1e-12, atol=0)
    assert [l.split(':')[0] for l in buf.getvalue().splitlines() if 'reducing lr' in l] == ['Epoch 3', 'Epoch 6', 'Epoch 8']

def test_reduce_lr_keeps_discriminative_ratios_and_min_lr():
    body, head = nn.Linear(8, 16), nn.Sequential(nn.ReLU(), nn.Linear(16, 2))
    learn = scripted_learner(script=[1.] * 6, model=nn.Sequential(body, head), layer_groups=[body, head])
    fit(learn, 6, [1e-3, 1e-2], callbacks=[ReduceLROnPlateauCallback(learn, factor=0.1, min_lr=5e-5)])
    # no improvement after epoch 0: reduce at epochs 1, 2, 3 (then the last group's lr, 1e-5, is below min_lr)
    assert np.allclose(learn.opt.hypers()['lr'], [1e-6, 1e-5], rtol=1e-9)


# -- CSVLogger

def test_csv_logger_header_and_rows(tmp_path):
    learn = tiny_learner(path=tmp_path, metrics=[accuracy, error_rate], callback_fns=[CSVLogger])
    fit(learn, 3, 1e-2)
    rec, lines = learn.recorder, (tmp_path / 'history.csv').read_text().splitlines()
    assert lines[0] == ','.join(rec.names) == 'epoch,train_loss,valid_loss,accuracy,error_rate,time'
    assert len(lines) == 4
    for i, line in enumerate(lines[1:]):
        cells = line.split(',')
        assert cells[:5] == [str(i), f'{rec.losses[4 * i + 3]:.6f}', f'{rec.val_losses[i]:.6f}',
                             f'{rec.metrics[i][0]:.6f}', f'{rec.metrics[i][1]:.6f}']
        assert cells[5] == '00:00'
    df = learn.csv_logger.read_logged_file()
    assert list(df.columns) == rec.names and list(df.epoch) == [0, 1, 2]
    assert np.allclose(df.valid_loss, rec.val_losses, atol=1e-6)

def test_csv_logger_keeps_finished_epochs_after_a_crash(tmp_path):
    learn = tiny_learner(path=tmp_path, callback_fns=[functools.partial(CSVLogger, filename='run')])
    with pytest.raises(RuntimeError, match='boom'): fit(learn, 5, 1e-2, callbacks=[RaiseAt(9)])   # in epoch 3
    lines = (tmp_path / 'run.csv').read_text().splitlines()
    assert lines[0] == 'epoch,train_loss,valid_loss,time' and [l.split(',')[0] for l in lines[1:]] == ['0', '1']
    assert learn.csv_logger._file is None        # closed at train_end

def test_csv_logger_rows_are_on_disk_during_training(tmp_path):
    learn = tiny_learner(path=tmp_path, callback_fns=[CSVLogger])
    on_disk = Probe('on_epoch_begin', lambda **kw: len((tmp_path / 'history.csv').read_text().splitlines()))
    fit(learn, 3, 1e-2, callbacks=[on_disk])
    assert on_disk.seen == [1, 2, 3]

def test_csv_logger_append_no_time_and_skipped_validation(tmp_path):
    class SkipValidation(Callback):
        def on_train_begin(self, **kwargs): return {'skip_validate': True}
    learn = tiny_learner(path=tmp_path, metrics=[accuracy], add_time=False)
    learn.callbacks = [CSVLogger(learn, append=True)]
    fit(learn, 1, 1e-2)
    fit(learn, 2, 1e-2, callbacks=[SkipValidation()])
    lines = (tmp_path / 'history.csv').read_text().splitlines()
    assert lines[0] == 'epoch,train_loss,valid_loss,accuracy' and len(lines) == 4
    assert [l.split(',')[2:] for l in lines[2:]] == [['#na#', '#na#']] * 2
    df = learn.csv_logger.read_logged_file()
    assert df.valid_loss.isna().tolist() == [False, True, True]

def test_csv_logger_with_time_pads_skipped_validation(tmp_path):
    learn = tiny_learner(path=tmp_path, n_valid=0, metrics=[accuracy], callback_fns=[CSVLogger])
    fit(learn, 1, 1e-2)
    row = (tmp_path / 'history.csv').read_text().splitlines()[1].split(',')
    assert row[2:4] == ['#na#', '#na#'] and row[4] == '00:00'

def test_csv_logger_without_pandas(tmp_path, monkeypatch):
    learn = tiny_learner(path=tmp_path, callback_fns=[CSVLogger])
    fit(learn, 2, 1e-2)
    monkeypatch.setitem(sys.modules, 'pandas', None)
    rows = learn.csv_logger.read_logged_file()
    assert [r['epoch'] for r in rows] == ['0', '1'] and list(rows[0]) == learn.recorder.names

def test_csv_logger_only_rank0_writes(tmp_path, monkeypatch):
    monkeypatch.setenv('RANK', '1')
    learn = tiny_learner(path=tmp_path, callback_fns=[CSVLogger])
    fit(learn, 1, 1e-2)
    assert not (tmp_path / 'history.csv').exists()

def test_csv_logger_untouched_by_validate(tmp_path):
    learn = tiny_learner(path=tmp_path)
    learn.callbacks = [CSVLogger(learn)]
    fit(learn, 2, 1e-2)
    before = (tmp_path / 'history.csv').read_text()
    learn.validate()
    assert (tmp_path / 'history.csv').read_text() == before

def test_csv_logger_bad_arguments():
    learn = tiny_learner()
    with pytest.raises(ValueError, match='filename'): CSVLogger(learn, filename='')
    with pytest.raises(ValueError, match='append'): CSVLogger(learn, append='yes')


# -- MixedPrecision

def test_bf16_autocast_trains_on_cpu():
    learn = tiny_learner(n_train=256, n_valid=64, bs=32).to_fp16()
    dtypes = {}
    hook = learn.model[0].register_forward_hook(lambda m, i, o: dtypes.update(hidden=o.dtype))
    loss_input = Probe('on_backward_begin', lambda last_output, **kw: last_output.dtype)
    fit(learn, 3, 1e-2, callbacks=[loss_input])
    hook.remove()
    rec = learn.recorder
    assert dtypes['hidden'] == torch.bfloat16 and set(loss_input.seen) == {torch.float32}
    assert learn.mp_cb.scaler is None
    assert rec.val_losses[-1] < 0.7 * rec.val_losses[0] and rec.losses[-1] < rec.losses[0]
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())

def test_to_fp16_and_to_fp32():
    learn = tiny_learner()
    learn.callbacks = [TerminateOnNaNCallback()]
    assert learn.to_fp16() is learn and learn.to_fp16(clip=1.) is learn
    mps = [cb for cb in learn.callbacks if isinstance(cb, MixedPrecision)]
    assert len(mps) == 1 and mps[0] is learn.mp_cb and learn.mp_cb.clip == 1.
    assert learn.to_fp32() is learn
    assert [type(cb) for cb in learn.callbacks] == [TerminateOnNaNCallback]
    assert not hasattr(learn, 'mp_cb') and not hasattr(learn, 'mixed_precision')

def test_autocast_is_off_between_batches_and_after_an_interrupted_forward():
    class Explode(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.calls = nn.Linear(8, 2), 0
        def forward(self, x):
            self.calls += 1
            if self.calls == 3:
                assert torch.is_autocast_enabled('cpu')
                raise KeyboardInterrupt
            return self.lin(x)
    learn = tiny_learner(model=Explode()).to_fp16()
    outside = Probe('on_batch_end', lambda **kw: torch.is_autocast_enabled('cpu'))
    with pytest.raises(KeyboardInterrupt): fit(learn, 1, 1e-2, callbacks=[outside])
    assert outside.seen == [False, False]
    assert not torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16
    fit(learn.to_fp32(), 1, 1e-2)                    # and the learner still trains

def test_autocast_does_not_leak_into_the_event_loop_during_afit():
    learn = tiny_learner().to_fp16()
    observed = []
    async def main():
        done = False
        async def watch():
            while not done:
                observed.append(torch.is_autocast_enabled('cpu'))
                await asyncio.sleep(0)
        task = asyncio.ensure_future(watch())
        with quiet(): await run_async(learn.fit_gen(2, 1e-2), yield_every=0)
        done = True
        await task
    asyncio.run(main())
    assert len(observed) > 10 and not any(observed)

def test_fp16_overflow_skips_the_step_and_halves_the_scale():
    learn = tiny_learner().to_fp16(dtype=torch.float16, loss_scale=2. ** 10)
    def poison(iteration, **kw):
        if iteration == 2: learn.model[0].weight.grad[0, 0] = float('inf')
    before_step = Probe('on_backward_end', lambda **kw: weights(learn.model), order=-1)
    after_step = Probe('on_step_end', lambda skip_step, **kw: (skip_step, weights(learn.model)))
    fit(learn, 1, 1e-2, callbacks=[Probe('on_backward_end', poison, order=-2), before_step, after_step])
    assert [s for s, _ in after_step.seen] == [False, False, True, False]
    assert same(before_step.seen[2], after_step.seen[2][1])        # the overflowing batch did not step
    assert not same(before_step.seen[3], after_step.seen[3][1])
    assert learn.mp_cb.scaler.get_scale() == 2. ** 9
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())

def test_fp16_scale_grows_up_to_max_scale_or_stays_when_static():
    learn = tiny_learner(n_train=128).to_fp16(dtype='float16', loss_scale=8., max_noskip=2, max_scale=32.)
    fit(learn, 1, 1e-3)                              # 8 clean steps: 8 -> 16 -> 32, then held at 32
    assert learn.mp_cb.scaler.get_scale() == 32.
    learn = tiny_learner().to_fp16(dtype='float16', loss_scale=64., max_noskip=1, dynamic=False)
    def poison(iteration, **kw):
        if iteration == 1: learn.model[0].weight.grad[0, 0] = float('nan')
    skips = Probe('on_step_end', lambda skip_step, **kw: skip_step)
    fit(learn, 1, 1e-3, callbacks=[Probe('on_backward_end', poison, order=-2), skips])
    assert skips.seen == [False, True, False, False] and learn.mp_cb.scaler.get_scale() == 64.

def test_fp16_gradients_are_unscaled_and_loss_stays_true():
    learn = tiny_learner().to_fp16(dtype='float16', loss_scale=2. ** 12)
    scaled = Probe('on_backward_end', lambda **kw: total_grad_norm(learn.model), order=500)   # before unscaling
    grads = Probe('on_backward_end', lambda **kw: total_grad_norm(learn.model))       # after unscaling
    losses = Probe('on_batch_end', lambda last_loss, train, **kw: (train, float(last_loss)))
    fit(learn, 1, 1e-3, callbacks=[scaled, grads, losses])
    assert np.allclose(np.array(scaled.seen) / np.array(grads.seen), 2. ** 12, rtol=1e-3)
    ref = tiny_learner()
    ref_grads = Probe('on_backward_end', lambda **kw: total_grad_norm(ref.model))
    fit(ref, 1, 1e-3, callbacks=[ref_grads])
    assert np.allclose(grads.seen, ref_grads.seen, rtol=2e-2)
    assert all(0 < l < 5 for _, l in losses.seen)                   # not multiplied by the scale

@pytest.mark.parametrize('how', ['GradientClipping', 'own clip'])
def test_fp16_clipping_sees_unscaled_gradients(how):
    learn = tiny_learner(loss_func=BigLoss())
    learn.to_fp16(dtype='float16', loss_scale=2. ** 10, clip=0.3 if how == 'own clip' else None)
    if how == 'GradientClipping': learn.clip_grad(0.3)
    norms = Probe('on_step_end', lambda skip_step, **kw: (skip_step, total_grad_norm(learn.model)), order=-1)
    # zero_grad runs after on_step_end, so the probe sees the gradients the step used
    fit(learn, 1, 1e-3, callbacks=[norms])
    stepped = [n for s, n in norms.seen if not s]
    assert len(stepped) >= 3 and all(abs(n - 0.3) < 1e-4 for n in stepped)

def test_fp16_with_accumulation_matches_fp32():
    runs = []
    for fp16 in (False, True):
        learn = accumulate_learner(ordered_data(40, 8))
        if fp16: learn.to_fp16(dtype='float16', loss_scale=2. ** 8)
        fit(learn, 2, 0.1, callbacks=[AccumulateScheduler(learn, n_step=2)])    # 5 batches: a remainder each epoch
        runs.append(weights(learn.model))
    assert all(torch.allclose(a, b, rtol=0, atol=2e-3) for a, b in zip(*runs))

def test_mixed_precision_from_an_earlier_fit_stays_out():
    learn = accumulate_learner(ordered_data(40, 8))
    fit(learn, 1, 0.1, callbacks=[MixedPrecision(learn, clip=1e-3, dtype='float16')])   # one fit only
    assert isinstance(learn.mixed_precision, MixedPrecision)
    ref = accumulate_learner(ordered_data(40, 8))
    ref.model.load_state_dict(learn.model.state_dict())
    for l in (learn, ref): fit(l, 1, 0.1, callbacks=[AccumulateScheduler(l, n_step=2)])   # remainder step at epoch end
    assert same(weights(learn.model), weights(ref.model))    # neither clipped nor unscaled by the old callback

@pytest.mark.parametrize('kw', [dict(dtype='int8'), dict(dtype=torch.float32), dict(loss_scale=0),
                                dict(loss_scale=-2.), dict(max_noskip=0), dict(clip=-1.), dict(max_scale=0)])
def test_mixed_precision_bad_arguments(kw):
    with pytest.raises(ValueError, match=list(kw)[0]): MixedPrecision(tiny_learner(), **kw)

def test_mixed_precision_state_survives_export(tmp_path):
    learn = tiny_learner(path=tmp_path).to_fp16(dtype='float16', loss_scale=256., clip=2., max_noskip=50)
    fit(learn, 1, 1e-3)
    learn.export()
    l2 = load_learner(tmp_path, data=learn.data)
    mp = l2.mixed_precision
    assert isinstance(mp, MixedPrecision) and l2.callbacks == [mp]
    assert (mp.loss_scale, mp.clip, mp.max_noskip, mp.dtype) == (256., 2., 50, torch.float16)
    fit(l2, 1, 1e-3)
    assert mp.scaler is not None


# -- hot path: no host syncs added in training batches

def count_host_reads(learn, monkeypatch, callbacks=None):
    "Number of `.item()`/`bool()`/`float()` calls on tensors inside each training batch."
    counts, state = [], {'on': False}
    def counting(name):
        orig = getattr(torch.Tensor, name)
        def f(self, *a, **k):
            if state['on']: counts[-1] += 1
            return orig(self, *a, **k)
        return f
    switches = [Probe('on_batch_begin', lambda train, **kw: (state.update(on=train), counts.append(0) if train else None),
                      order=-10 ** 6),
                Probe('on_batch_end', lambda **kw: state.update(on=False), order=10 ** 6),
                # the optimizer's own step (e.g. Adam reading its CPU step counters) is not the callbacks' doing
                Probe('on_backward_end', lambda **kw: state.update(on=False), order=10 ** 6),
                Probe('on_step_end', lambda **kw: state.update(on=True), order=-10 ** 6)]
    with monkeypatch.context() as m:
        for name in ('item', '__bool__', '__float__'): m.setattr(torch.Tensor, name, counting(name))
        fit(learn, 1, 1e-3, callbacks=listify(callbacks) + switches)
    return counts

def test_callbacks_add_no_host_reads_per_training_batch(tmp_path, monkeypatch):
    learn = tiny_learner(path=tmp_path, loss_func=CrossEntropyFlat(reduction='sum'), metrics=[accuracy])
    learn.callbacks = [TerminateOnNaNCallback(), BnFreeze(learn), CSVLogger(learn), EarlyStoppingCallback(learn),
                       SaveModelCallback(learn), ReduceLROnPlateauCallback(learn)]
    learn.clip_grad(1.).to_fp16()
    counts = count_host_reads(learn, monkeypatch, [AccumulateScheduler(learn, n_step=2)])
    assert counts == [1] * 4                                  # TerminateOnNaN's test only: the loop reads nothing
    learn.to_fp16(dtype='float16')
    assert count_host_reads(learn, monkeypatch) == [2] * 4    # float16 adds torch's overflow check


# -- export / load_learner

def test_every_callback_round_trips_through_export(tmp_path):
    learn = tiny_learner(path=tmp_path, metrics=[accuracy])
    learn.callbacks = [GradientClipping(learn, 0.3), BnFreeze(learn), AccumulateScheduler(learn, 3, True),
                       TerminateOnNaNCallback(), EarlyStoppingCallback(learn, 'accuracy', 'max', 0.01, 2),
                       SaveModelCallback(learn, 'train_loss', 'min', 'epoch', 'snap'),
                       ReduceLROnPlateauCallback(learn, 'valid_loss', 'auto', 1, 0.5, 0.001, 1e-5),
                       CSVLogger(learn, 'log', True)]
    learn.to_fp16(loss_scale=128., clip=1., max_noskip=10, max_scale=2. ** 20, loss_fp32=False, dtype='bfloat16')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fit(learn, 2, 1e-3)                  # run-time state (open files, scalers, parameters) must not get in the way
    learn.export()
    l2 = load_learner(tmp_path, data=learn.data)
    assert [type(c) for c in l2.callbacks] == [type(c) for c in learn.callbacks]
    for a, b in zip(learn.callbacks, l2.callbacks):
        assert a.get_state() == b.get_state() and repr(a) == repr(b)
    assert l2.callbacks[0].get_state() == {'clip': 0.3}
    assert l2.callbacks[3].get_state() == {'stop': False}
    assert not any(k.startswith('_') for cb in l2.callbacks for k in cb.get_state())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fit(l2, 1, 1e-3)
    assert len((tmp_path / 'log.csv').read_text().splitlines()) == 4   # header + 2 + 1 appended rows

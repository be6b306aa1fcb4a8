"Foundation tests: the callback system, the fit loop and its control keys, the Recorder, saving (issue 2)."
import asyncio, functools, math, os

import numpy as np
import pytest
import torch
from torch import nn

from conftest import quiet
from fastcb_nb.testing import tiny_model
from fastcb_nb.core import camel2snake, defaults
from fastcb_nb.callback import Callback, CallbackHandler, AverageMetric
from fastcb_nb.learner import (Learner, LearnerCallback, Recorder, DataBunch, DeviceDataLoader, synthetic_data,
                               CrossEntropyFlat, MSELossFlat, accuracy, error_rate, load_learner, run_sync,
                               validate_loop, AdamW)


class Tracer(Callback):
    "Log every event with the counters it sees."
    def __init__(self, log): self.log = log
    def _rec(self, name, kw): self.log.append((name, kw.get('train'), kw.get('iteration'), kw.get('num_batch')))
    def on_train_begin(self, **kw): self._rec('train_begin', kw)
    def on_epoch_begin(self, **kw): self._rec('epoch_begin', kw)
    def on_batch_begin(self, **kw): self._rec('batch_begin', kw)
    def on_loss_begin(self, **kw): self._rec('loss_begin', kw)
    def on_backward_begin(self, **kw): self._rec('backward_begin', kw)
    def on_backward_end(self, **kw): self._rec('backward_end', kw)
    def on_step_end(self, **kw): self._rec('step_end', kw)
    def on_batch_end(self, **kw): self._rec('batch_end', kw)
    def on_epoch_end(self, **kw): self._rec('epoch_end', kw)
    def on_train_end(self, **kw): self._rec('train_end', kw)


class MetricTracer(Tracer):
    "A metric (a Callback passed in metrics) that logs the events it is called for."
    name = 'tracer_metric'
    def on_epoch_end(self, last_metrics, **kw):
        self._rec('epoch_end', kw)
        return {'last_metrics': last_metrics + [1.0]}


TRAIN_BATCH = ['batch_begin', 'loss_begin', 'backward_begin', 'backward_end', 'step_end', 'batch_end']
VALID_BATCH = ['batch_begin', 'loss_begin', 'batch_end']


def test_event_order_and_counters(make_learner):
    log = []
    learn = make_learner(n_train=64, n_valid=64, bs=32)   # 2 training and 2 validation batches per epoch
    with quiet(): learn.fit(2, 1e-3, callbacks=[Tracer(log)])
    names = [e[0] for e in log]
    epoch = ['epoch_begin'] + TRAIN_BATCH * 2 + VALID_BATCH * 2 + ['epoch_end']
    assert names == ['train_begin'] + epoch * 2 + ['train_end']
    train_events = [e for e in log if e[0] == 'backward_begin']
    assert [(e[2], e[3]) for e in train_events] == [(0, 0), (1, 1), (2, 0), (3, 1)]   # iteration, num_batch
    # validation batches see train=False and the counters of the training done so far
    valid_ends = [e for e in log if e[0] == 'batch_end' and e[1] is False]
    assert [e[2] for e in valid_ends] == [2, 2, 4, 4]


def test_metrics_only_at_v1_events(make_learner):
    log = []
    learn = make_learner(n_train=64, n_valid=64, bs=32, metrics=[MetricTracer(log)])
    with quiet(): learn.fit(1, 1e-3)
    names = [e[0] for e in log]
    # metrics: train_begin, epoch_begin, validation batch_begin/batch_end, epoch_end (validation ran), train_end
    assert names == ['train_begin', 'epoch_begin', 'batch_begin', 'batch_end', 'batch_begin', 'batch_end',
                     'epoch_end', 'train_end']
    assert all(e[1] is False for e in log if e[0] in ('batch_begin', 'batch_end'))
    assert learn.recorder.metrics == [[1.0]] and learn.recorder.names[-2] == 'tracer_metric'


def test_metrics_run_before_callbacks():
    order = []
    class M(Callback):
        def on_epoch_begin(self, **kw): order.append('metric')
    class C(Callback):
        _order = -100
        def on_epoch_begin(self, **kw): order.append('callback')
    h = CallbackHandler([C()], [M()])
    h.on_train_begin(1, None, [])
    h.on_epoch_begin()
    assert order == ['metric', 'callback']


class Order(Callback):
    def __init__(self, name, order, log): self.name, self._order, self.log = name, order, log
    def on_train_begin(self, **kw): self.log.append(self.name)


def test_stable_order_across_callback_lists(make_learner):
    "V1 §1.6: learn.callbacks [a(0), b(-5)], callback_fns [Recorder, c(0)], fit callbacks [d(0), e(5), f(-10)]."
    log = []
    class RecorderTrace(Recorder):
        def on_train_begin(self, **kw):
            log.append('Recorder'); super().on_train_begin(**kw)
    learn = make_learner(callbacks=[Order('a', 0, log), Order('b', -5, log)])
    learn.callback_fns = [RecorderTrace, lambda l: Order('c', 0, log)]
    with quiet(): learn.fit(1, 1e-3, callbacks=[Order('d', 0, log), Order('e', 5, log), Order('f', -10, log)])
    assert log == ['Recorder', 'f', 'b', 'a', 'c', 'd', 'e']


def test_returned_dicts_merge_one_callback_at_a_time():
    seen = []
    class A(Callback):
        def on_epoch_begin(self, **kw): return {'skip_validate': True}
    class B(Callback):
        def on_epoch_begin(self, skip_validate, **kw): seen.append(skip_validate)
    h = CallbackHandler([A(), B()])
    h.on_train_begin(1, None, []); h.on_epoch_begin()
    assert seen == [True]


@pytest.mark.parametrize('event,ret,exc,words', [
    ('on_train_begin', {'stop_training': True}, ValueError, ["'stop_training'", 'Bad.on_train_begin']),
    ('on_train_begin', {'last_loss': 1.}, ValueError, ["'last_loss'", 'Bad']),
    ('on_epoch_begin', {'not_a_key': 1}, ValueError, ["'not_a_key'", 'Bad.on_epoch_begin']),
    ('on_batch_end', True, TypeError, ['Bad.on_batch_end', 'bool']),
    ('on_epoch_end', [1], TypeError, ['Bad.on_epoch_end', 'list']),
])
def test_bad_returns_name_the_key_and_callback(make_learner, event, ret, exc, words):
    Bad = type('Bad', (Callback,), {event: lambda self, **kw: ret})
    learn = make_learner()
    with quiet(), pytest.raises(exc) as e: learn.fit(1, 1e-3, callbacks=[Bad()])
    assert all(w in str(e.value) for w in words), str(e.value)


def test_non_callback_in_callbacks_is_a_clear_error(make_learner):
    learn = make_learner()
    learn.callbacks.append([Callback()])
    with quiet(), pytest.raises(TypeError, match='not a Callback'): learn.fit(1, 1e-3)


# -- control keys

def _weights(model): return [p.detach().clone() for p in model.parameters()]

def _same(a, b): return all(torch.equal(x, y) for x, y in zip(a, b))


def test_skip_validate(make_learner):
    class NoVal(Callback):
        def on_train_begin(self, **kw): return {'skip_validate': True}
    log = []
    learn = make_learner()
    with quiet() as out: learn.fit(2, 1e-3, callbacks=[NoVal(), Tracer(log)])
    assert learn.recorder.val_losses == [None, None]
    learn = make_learner(metrics=[accuracy])
    with quiet() as out: learn.fit(1, 1e-3, callbacks=[NoVal()])
    row = [l.split('\r')[-1] for l in out.getvalue().splitlines() if l.split('\r')[-1].startswith('0 ')][0]
    assert row.split()[2:4] == ['#na#', '#na#']   # valid_loss and accuracy; time stays in its column
    assert not any(e[1] is False for e in log if e[0] == 'batch_begin')
    assert '#na#' in out.getvalue()


def test_stop_epoch_breaks_batches_and_validation_still_runs(make_learner):
    class StopAt(Callback):
        def on_batch_end(self, num_batch, train, **kw):
            if train and num_batch == 1: return {'stop_epoch': True}
    learn = make_learner(n_train=128, bs=32)   # 4 batches per epoch
    with quiet(): learn.fit(2, 1e-3, callbacks=[StopAt()])
    assert learn.recorder.nb_batches == [2, 2] and all(v is not None for v in learn.recorder.val_losses)


def test_stop_training_at_batch_level_ends_after_the_epoch(make_learner):
    class Stop(Callback):
        def on_batch_end(self, iteration, **kw):
            if iteration == 1: return {'stop_training': True}
    learn = make_learner(n_train=128, bs=32)
    with quiet(): learn.fit(3, 1e-3, callbacks=[Stop()])
    assert learn.recorder.nb_batches == [4] and learn.recorder.val_losses[0] is not None


def test_stop_training_at_epoch_end(make_learner):
    class Stop(Callback):
        def on_epoch_end(self, epoch, **kw): return {'stop_training': epoch == 1}
    learn = make_learner()
    with quiet(): learn.fit(5, 1e-3, callbacks=[Stop()])
    assert len(learn.recorder.nb_batches) == 2


def test_skip_step_keeps_weights_and_skip_zero_keeps_grads(make_learner):
    class SkipStep(Callback):
        def on_backward_end(self, **kw): return {'skip_step': True}
    learn = make_learner(wd=0.)
    w0 = _weights(learn.model)
    with quiet(): learn.fit(1, 1e-2, callbacks=[SkipStep()])
    assert _same(w0, _weights(learn.model))

    grads = []
    class SkipZero(Callback):
        def on_step_end(self, **kw): return {'skip_zero': True}
        def on_backward_begin(self, **kw):
            g = learn.model[0].weight.grad
            grads.append(None if g is None else g.clone())
    learn = make_learner(wd=0.)
    with quiet(): learn.fit(1, 1e-2, callbacks=[SkipZero()])
    assert grads[0] is None and all(g is not None for g in grads[1:])   # never zeroed after the first batch


def test_skip_bwd_means_no_gradients(make_learner):
    class SkipBwd(Callback):
        def on_backward_begin(self, **kw): return {'skip_bwd': True}
        def on_backward_end(self, **kw):
            assert all(p.grad is None for p in learn.model.parameters())
    learn = make_learner()
    with quiet(): learn.fit(1, 1e-3, callbacks=[SkipBwd()])


def test_rewritable_last_keys(make_learner):
    seen = {}
    class Rewrite(Callback):
        def on_batch_begin(self, last_input, last_target, train, **kw):
            if train: return {'last_input': torch.zeros_like(last_input), 'last_target': torch.zeros_like(last_target)}
        def on_loss_begin(self, last_output, train, **kw):
            if train: return {'last_output': last_output * 0}
        def on_backward_begin(self, last_loss, last_output, last_target, **kw):
            seen['out'], seen['target'] = last_output.abs().sum().item(), last_target.abs().sum().item()
            return {'last_loss': last_loss * 0 + 7.}
        def on_batch_end(self, last_loss, train, **kw):
            if train: seen.setdefault('batch_end_losses', []).append(float(last_loss))
    learn = make_learner()
    with quiet(): learn.fit(1, 1e-3, callbacks=[Rewrite()])
    assert seen['out'] == 0 and seen['target'] == 0
    assert seen['batch_end_losses'] == [7.] * 4
    # smoothing happens before callbacks can change the loss: the recorded losses are ~log(2), not 7
    assert all(abs(l - math.log(2)) < 1e-6 for l in learn.recorder.losses)


def test_exception_delivered_to_train_end_and_propagates(make_learner):
    for exc in (ValueError('boom'), KeyboardInterrupt()):
        got = []
        class Raise(Callback):
            def on_batch_end(self, iteration, **kw):
                if iteration == 5: raise exc
            def on_train_end(self, exception, **kw): got.append(exception)
        learn = make_learner(n_train=128, bs=32)
        with quiet(), pytest.raises(type(exc)): learn.fit(3, 1e-3, callbacks=[Raise()])
        assert got == [exc]
        rec = learn.recorder
        assert len(rec.losses) == 6 and len(rec.lrs) == 6 and rec.nb_batches == [4]   # history intact
        bar = rec.pbar.child
        assert bar.last_v is None and rec.pbar.main_bar.last_v is None               # bars closed


def test_exception_in_train_begin_still_calls_train_end(make_learner):
    got = []
    class Raise(Callback):
        def on_train_begin(self, **kw): raise RuntimeError('setup failed')
        def on_train_end(self, exception, **kw): got.append(exception)
    learn = make_learner()
    with quiet(), pytest.raises(RuntimeError): learn.fit(1, 1e-3, callbacks=[Raise()])
    assert isinstance(got[0], RuntimeError)


def test_normal_end_passes_false(make_learner):
    got = []
    class End(Callback):
        def on_train_end(self, exception, **kw): got.append(exception)
    learn = make_learner()
    with quiet(): learn.fit(1, 1e-3, callbacks=[End()])
    assert got == [False]


# -- validation and data

def test_validation_is_batch_size_weighted():
    class ConstLoss:
        def __call__(self, out, y): return out.sum() * 0 + y.float().mean()
    xs, ys = torch.zeros(6, 8), torch.tensor([4, 4, 4, 4, 2, 2])
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=4)
    v = run_sync(validate_loop(nn.Linear(8, 2), DeviceDataLoader(dl, torch.device('cpu')), ConstLoss()))
    assert math.isclose(v, 10 / 3, rel_tol=1e-9)
    data = DataBunch(dl, dl, device='cpu')
    learn = Learner(data, nn.Linear(8, 2), loss_func=ConstLoss(), metrics=[lambda o, y: y.float().mean()])
    res = learn.validate()
    assert math.isclose(res[0], 10 / 3, rel_tol=1e-6) and math.isclose(res[1], 10 / 3, rel_tol=1e-6)


def test_empty_train_dataloader_error(make_learner):
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(3, 8), torch.zeros(3).long()),
                                        batch_size=4, drop_last=True)
    learn = Learner(DataBunch(empty, None, device='cpu'), nn.Linear(8, 2), loss_func=CrossEntropyFlat())
    with pytest.raises(ValueError, match='train') as e: learn.fit(1, 1e-3)
    assert 'batch size=4 for 3 elements' in str(e.value)
    assert learn.opt is None   # nothing was set up


def test_databunch_moves_tuple_batches():
    xs = torch.randn(8, 3); ys = torch.randn(8, 1)
    ds = torch.utils.data.TensorDataset(xs, xs, ys)
    class Pairs(torch.utils.data.Dataset):
        def __len__(self): return 8
        def __getitem__(self, i): return (xs[i], xs[i] * 2), ys[i]
    data = DataBunch(torch.utils.data.DataLoader(Pairs(), batch_size=4), device='cpu')
    (a, b), y = next(iter(data.train_dl))
    assert a.shape == (4, 3) and torch.allclose(b, a * 2) and y.shape == (4, 1)
    class TwoIn(nn.Module):
        def __init__(self): super().__init__(); self.l = nn.Linear(3, 1)
        def forward(self, a, b): return self.l(a + b)
    learn = Learner(data, TwoIn(), loss_func=MSELossFlat())
    with quiet(): learn.fit(1, 1e-2)
    assert len(learn.recorder.losses) == 2
    with pytest.raises(TypeError, match='train_dl'): DataBunch(42)


def test_bad_batch_shape_is_clear():
    ds = torch.utils.data.TensorDataset(torch.zeros(4, 2), torch.zeros(4), torch.zeros(4))
    data = DataBunch(torch.utils.data.DataLoader(ds, batch_size=2), device='cpu')
    with pytest.raises(ValueError, match=r'\(input, target\) pair'): next(iter(data.train_dl))


# -- learning rates and bad arguments

def test_lr_range_and_slices(make_learner):
    model = tiny_model()                   # the layer groups are modules of the learner's own model
    learn = make_learner(model=model, layer_groups=[model[0], model[2]])
    assert np.allclose(learn.lr_range(slice(1e-4, 1e-2)), [1e-4, 1e-2])
    assert np.allclose(learn.lr_range(slice(1e-2)), [1e-3, 1e-2])
    assert learn.lr_range(3e-3) == 3e-3
    with quiet(): learn.fit(1, slice(1e-4, 1e-2))
    assert [pg['lr'] for pg in learn.opt.param_groups] == [1e-4, 1e-2]
    assert learn.recorder.lrs[0] == 1e-2 and type(learn.recorder.lrs[0]) is float


def test_learn_lr_used_when_no_rate(make_learner):
    learn = make_learner()
    with quiet(): learn.fit(1)
    assert learn.recorder.lrs[0] == pytest.approx(3e-3)   # defaults.lr = slice(3e-3)
    learn.lr = 5e-4
    with quiet(): learn.fit(1)
    assert learn.recorder.lrs[0] == 5e-4


@pytest.mark.parametrize('kwargs,word', [({'epochs': 0, 'lr': 1e-3}, 'epochs'), ({'epochs': 1.5, 'lr': 1e-3}, 'epochs'),
                                         ({'epochs': 1, 'lr': -1e-3}, 'lr'), ({'epochs': 1, 'lr': 0.}, 'lr'),
                                         ({'epochs': 1, 'lr': float('nan')}, 'lr'), ({'epochs': 1, 'lr': [1e-3, 0]}, 'lr'),
                                         ({'epochs': 1, 'lr': slice(-1, 1)}, 'lr'), ({'epochs': 1, 'lr': 1e-3, 'wd': -1}, 'wd')])
def test_bad_arguments_raise_before_weights_change(make_learner, kwargs, word):
    learn = make_learner()
    w0 = _weights(learn.model)
    with pytest.raises(ValueError, match=word): learn.fit(**kwargs)
    assert _same(w0, _weights(learn.model))


# -- LearnerCallback

def test_learner_callback_registration_and_read_through(make_learner):
    class MyCB1(LearnerCallback): pass
    class HTTPResponseCallback(LearnerCallback): pass
    learn = make_learner()
    cb = MyCB1(learn)
    assert learn.my_cb1 is cb and cb.cb_name == 'my_cb1' and camel2snake('HTTPResponseCallback') == 'http_response_callback'
    assert HTTPResponseCallback(learn) is learn.http_response_callback
    assert cb.model is learn.model and cb.data is learn.data and cb.loss_func is learn.loss_func
    with pytest.raises(AttributeError, match='nope'): cb.nope
    assert cb.get_state() == {}
    import weakref
    assert isinstance(cb._learn, weakref.ref)
    with quiet(): learn.fit(1, 1e-3)
    assert isinstance(learn.recorder, Recorder)


def test_get_state_exclude_and_not_min(make_learner):
    class Clip(LearnerCallback):
        def __init__(self, learn, clip=0.):
            super().__init__(learn)
            self.clip, self.buf = clip, [1]
            self.not_min += ['buf']
    learn = make_learner()
    assert Clip(learn, 0.3).get_state() == {'clip': 0.3}
    assert Clip(learn, 0.3).get_state(minimal=False) == {'clip': 0.3, 'buf': [1]}


# -- Recorder

def test_recorder_lists_and_table(make_learner):
    learn = make_learner(n_train=128, n_valid=64, bs=32, metrics=[accuracy, error_rate])
    with quiet() as out: learn.fit(2, 1e-2)
    rec = learn.recorder
    assert len(rec.losses) == len(rec.lrs) == len(rec.moms) == 8 and rec.nb_batches == [4, 4]
    assert len(rec.val_losses) == 2 and len(rec.metrics) == 2 and len(rec.metrics[0]) == 2
    assert all(type(v) is float for v in rec.losses + rec.lrs + rec.moms + rec.val_losses + sum(rec.metrics, []))
    assert rec.moms == [0.9] * 8
    lines = [l.split('\r')[-1] for l in out.getvalue().splitlines() if l.strip()]
    header = [l for l in lines if l.startswith('epoch')][0]
    assert header.split() == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'error_rate', 'time']
    assert header.startswith('epoch     train_loss  valid_loss  accuracy  error_rate  time')
    rows = [l for l in lines if l[:1].isdigit()]
    assert len(rows) == 2
    cells = rows[1].split()
    assert cells[0] == '1' and float(cells[1]) == pytest.approx(rec.losses[-1], abs=1e-6)
    assert float(cells[2]) == pytest.approx(rec.val_losses[-1], abs=1e-6)
    assert float(cells[3]) == pytest.approx(rec.metrics[-1][0], abs=1e-6) and len(cells[5]) == 5
    # v1 layout: each cell padded to its header width + 2
    first = rows[0].split()
    assert rows[0].index(first[1]) == header.index('train_loss') and rows[0].index(first[2]) == header.index('valid_loss')


def test_recorder_silent_and_no_time(make_learner):
    learn = make_learner(silent=True)
    with quiet() as out: learn.fit(1, 1e-3)
    assert 'train_loss' not in out.getvalue()
    learn = make_learner(add_time=False)
    with quiet(): learn.fit(1, 1e-3)
    assert learn.recorder.names == ['epoch', 'train_loss', 'valid_loss']


def test_add_metric_names(make_learner):
    class Extra(LearnerCallback):
        _order = -20
        def on_train_begin(self, **kw): self.learn.recorder.add_metric_names(['col_a'])
        def on_epoch_end(self, last_metrics, **kw): return {'last_metrics': last_metrics + [42]}
    learn = make_learner()
    learn.callback_fns.append(Extra)
    with quiet() as out: learn.fit(1, 1e-3)
    assert learn.recorder.names == ['epoch', 'train_loss', 'valid_loss', 'col_a', 'time']
    assert '42' in out.getvalue() and learn.recorder.metrics == [[42]]


def test_plots_return_figures_with_v1_labels(make_learner):
    learn = make_learner(metrics=[accuracy])
    with quiet(): learn.fit(2, 1e-2)
    rec = learn.recorder
    from matplotlib.figure import Figure
    fig = rec.plot_losses(return_fig=True)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ('Batches processed', 'Loss')
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['Train', 'Validation']
    assert list(ax.lines[1].get_xdata()) == [4, 8]
    fig = rec.plot_lr(return_fig=True)
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ('Iterations', 'Learning Rate')
    fig = rec.plot_lr(show_moms=True, return_fig=True)
    assert [a.get_ylabel() for a in fig.axes] == ['Learning Rate', 'Momentum']
    assert tuple(fig.get_size_inches()) == (12, 4)
    fig = rec.plot_metrics(return_fig=True)
    assert [a.get_ylabel() for a in fig.axes] == ['accuracy'] and fig.axes[0].get_xlabel() == 'Batches processed'
    fig = rec.plot(skip_start=0, skip_end=0, return_fig=True)
    assert fig.axes[0].get_xscale() == 'log' and (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ('Learning Rate', 'Loss')
    assert rec.plot_losses(skip_start=1, skip_end=1) is None   # not returned outside a notebook by default
    assert len(rec.plot_lr(skip_start=2, skip_end=1, return_fig=True).axes[0].lines[0].get_xdata()) == 8 - 3


def test_plot_metrics_without_metrics_is_clear(make_learner):
    learn = make_learner()
    with quiet(): learn.fit(1, 1e-3)
    with pytest.raises(ValueError, match='no metrics'): learn.recorder.plot_metrics()


def test_split_list_val_reference():
    from fastcb_nb.recorder import _split_list_val
    nb = [10, 10, 10]
    assert _split_list_val([1, 2, 3], 0, 0, nb)[0] == [1, 2, 3]
    assert _split_list_val([1, 2, 3], 11, 0, nb)[0] == [2, 3]
    assert _split_list_val([1, 2, 3], 0, 5, nb)[0] == [1, 2]
    assert _split_list_val([1, 2, 3], 0, 15, nb)[0] == [1]


# -- optimizer facade

def test_optimizer_momentum_placement(make_learner):
    learn = make_learner(opt_func=functools.partial(torch.optim.SGD, momentum=0.9))
    with quiet(): learn.fit(1, 1e-3)
    learn.opt.mom = 0.5
    assert all(pg['momentum'] == 0.5 for pg in learn.opt.param_groups) and learn.recorder.moms[0] == 0.9
    learn = make_learner()
    with quiet(): learn.fit(1, 1e-3)
    learn.opt.mom, learn.opt.beta = 0.7, 0.95
    assert all(pg['betas'] == (0.7, 0.95) for pg in learn.opt.param_groups)


def test_true_wd_matches_manual_decay(make_learner):
    "SGD with true weight decay: p <- p*(1-lr*wd) then the SGD step (v1 OptimWrapper.step)."
    learn = make_learner(opt_func=torch.optim.SGD, wd=0.1, bn_wd=False)
    ds = learn.data.train_dl.dataset
    learn.data = DataBunch(torch.utils.data.DataLoader(ds, batch_size=32), None, device='cpu')   # no shuffling
    ref = [p.detach().clone() for p in learn.model.parameters()]
    xb, yb = next(iter(learn.data.train_dl))
    with quiet(): learn.fit(1, 0.5, callbacks=[StopAfter(1)])
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    with torch.no_grad():
        for p, r in zip(model.parameters(), ref): p.copy_(r)
    loss = nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('weight'): p.mul_(1 - 0.5 * 0.1)
            p.sub_(0.5 * p.grad)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(model.parameters(), learn.model.parameters()))


class StopAfter(Callback):
    def __init__(self, n): self.n = n
    def on_batch_end(self, iteration, train, **kw):
        if train and iteration + 1 >= self.n: return {'stop_epoch': True, 'stop_training': True, 'skip_validate': True}


# -- saving

def test_save_load_round_trip_weights_only(make_learner, tmp_path):
    learn = make_learner()
    with quiet(): learn.fit(1, 1e-2)
    p = learn.save('stage1', return_path=True)
    assert p == tmp_path / 'models' / 'stage1.pth'
    state = torch.load(p, weights_only=True)
    assert set(state) == {'model', 'opt'}
    import copy
    w, opt_state = _weights(learn.model), copy.deepcopy(learn.opt.state_dict())
    with quiet(): learn.fit(1, 1e-2)
    assert not _same(w, _weights(learn.model))
    learn.load('stage1')
    assert _same(w, _weights(learn.model))
    st = learn.opt.state_dict()['state']
    assert all(torch.equal(st[k]['exp_avg'], opt_state['state'][k]['exp_avg']) for k in st)
    learn.save('bare', with_opt=False)
    assert 'model' not in torch.load(tmp_path / 'models' / 'bare.pth', weights_only=True)
    with pytest.raises(FileNotFoundError): learn.load('missing')


def test_interrupted_save_leaves_previous_file_intact(make_learner, tmp_path, monkeypatch):
    learn = make_learner()
    p = learn.save('m', return_path=True)
    good = p.read_bytes()
    real_save = torch.save
    def broken_save(obj, f, *a, **k):
        with open(f, 'wb') as fh: fh.write(b'partial')
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(KeyboardInterrupt): learn.save('m')
    with pytest.raises(KeyboardInterrupt): learn.export()
    monkeypatch.setattr(torch, 'save', real_save)
    assert p.read_bytes() == good
    assert not (tmp_path / 'export.pkl').exists()
    assert [f for f in os.listdir(p.parent) if f != 'm.pth'] == [] and not list(tmp_path.glob('.*tmp'))


class Probe(LearnerCallback):
    def __init__(self, learn, alpha=0.5, beta=3):
        super().__init__(learn)
        self.alpha, self.beta, self.hits = alpha, beta, 7
        self.exclude += ['cache']; self.cache = object()


def test_export_load_learner_round_trip(make_learner, tmp_path):
    learn = make_learner(metrics=[accuracy], wd=0.05)
    learn.callbacks.append(Probe(learn, alpha=0.25))
    with quiet(): learn.fit(1, 1e-2)
    path = learn.export()
    assert path == tmp_path / 'export.pkl'
    with pytest.raises(ValueError, match='test_learner.Probe'): load_learner(tmp_path, data=learn.data)   # not fastcb_nb's
    l2 = load_learner(tmp_path, data=learn.data, trusted=True)          # this test's own class: trusted
    assert _same(_weights(learn.model), _weights(l2.model))
    assert l2.wd == 0.05 and l2.metrics == [accuracy]
    assert l2.opt_func.func is torch.optim.Adam and l2.opt_func.keywords == {'betas': (0.9, 0.99)}
    probe = l2.callbacks[0]
    assert isinstance(probe, Probe) and probe.alpha == 0.25 and probe.beta == 3 and probe.hits == 7
    assert l2.probe is probe and 'cache' not in probe.get_state()
    assert len([f for f in l2.callback_fns if getattr(f, 'func', f) is Recorder]) == 1
    with quiet(): l2.fit(1, 1e-3)
    assert l2.validate()[1] > 0.5
    l3 = load_learner(tmp_path, trusted=True)   # no data: inference only; training says what is missing
    with pytest.raises(ValueError, match='no data'): l3.fit(1)


# -- async

def test_afit_gives_the_same_result_as_fit(make_learner):
    a, b = make_learner(seed=3), make_learner(seed=3)
    torch.manual_seed(1)
    with quiet(): a.fit(2, 1e-2)
    torch.manual_seed(1)
    with quiet(): asyncio.run(b.afit(2, 1e-2))
    assert a.recorder.losses == b.recorder.losses and a.recorder.val_losses == b.recorder.val_losses
    assert _same(_weights(a.model), _weights(b.model))


def test_afit_cancellation_reaches_train_end(make_learner):
    got = []
    class Slow(Callback):
        def on_batch_end(self, **kw):
            import time; time.sleep(0.02)
        def on_train_end(self, exception, **kw): got.append(exception)
    learn = make_learner(n_train=512, bs=16)
    async def main():
        task = asyncio.ensure_future(learn.afit(5, 1e-3, callbacks=[Slow()]))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError): await task
    with quiet(): asyncio.run(main())
    assert isinstance(got[0], asyncio.CancelledError) and 0 < len(learn.recorder.losses) < 160


def test_afit_yields_to_the_event_loop(make_learner):
    learn = make_learner(n_train=256, bs=8)
    ticks = []
    class Slow(Callback):
        def on_batch_end(self, **kw):
            import time; time.sleep(0.005)
    async def ticker():
        while True:
            ticks.append(1); await asyncio.sleep(0)
    async def main():
        t = asyncio.ensure_future(ticker())
        await learn.afit(1, 1e-3, callbacks=[Slow()])   # 32 batches of >= 5 ms: several 50 ms slices
        t.cancel()
    with quiet(): asyncio.run(main())
    assert len(ticks) >= 2


def test_resume_from_a_returned_epoch(make_learner):
    "A callback returning {'epoch': n} at train_begin resumes there: only the remaining epochs run."
    class Resume(Callback):
        def __init__(self, epoch): self.epoch, self.jumped = epoch, []
        def on_train_begin(self, **kw): return {'epoch': self.epoch}
        def jump_to_epoch(self, epoch): self.jumped.append(epoch)
    for start, n_run in ((1, 2), (3, 0)):
        learn = make_learner()
        cb = Resume(start)
        with quiet() as out: learn.fit(3, 1e-3, callbacks=[cb])
        assert len(learn.recorder.nb_batches) == n_run and cb.jumped == [start]
        rows = [l.split('\r')[-1].split()[0] for l in out.getvalue().splitlines() if l.split('\r')[-1][:1].isdigit()]
        assert rows == [str(e) for e in range(start, 3)]


def test_plot_suggestion_ignores_the_nan_tail(make_learner):
    learn = make_learner()
    with quiet(): learn.fit(1, 1e-3)
    rec = learn.recorder
    rec.lrs = [1e-5 * 1.2 ** i for i in range(80)]
    rec.losses = [3 - 0.02 * i for i in range(50)] + [float('nan')] * 30
    with quiet() as out: rec.plot(suggestion=True, skip_start=0, skip_end=0, return_fig=True)
    assert rec.min_grad_lr in rec.lrs[:50]
    assert f'Min loss divided by 10: {rec.lrs[49] / 10:.2E}' in out.getvalue()


def test_in_async_fit_tells_afit_from_fit(make_learner):
    from fastcb_nb.learner import in_async_fit
    seen = []
    class Probe(Callback):
        def on_epoch_begin(self, **kw): seen.append(in_async_fit())
    learn = make_learner()
    with quiet():
        learn.fit(1, 1e-3, callbacks=[Probe()])
        asyncio.run(learn.afit(1, 1e-3, callbacks=[Probe()]))
    assert seen == [False, True] and in_async_fit() is False


def test_freeze_unfreeze_over_layer_groups(tmp_path):
    torch.manual_seed(0)
    data = synthetic_data(n_train=64, n_valid=32, bs=32, device='cpu')
    body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
    head = nn.Linear(16, 2)
    learn = Learner(data, nn.Sequential(body, head), loss_func=CrossEntropyFlat(), layer_groups=[body, head],
                    path=tmp_path)
    learn.freeze()
    assert not body[0].weight.requires_grad and body[1].weight.requires_grad and head.weight.requires_grad  # train_bn
    frozen, bn = body[0].weight.detach().clone(), body[1].weight.detach().clone()
    with quiet(): learn.fit(1, 1e-2)
    assert torch.equal(frozen, body[0].weight) and not torch.equal(bn, body[1].weight)
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    with quiet(): learn.fit(1, 1e-2)
    assert not torch.equal(frozen, body[0].weight)
    learn2 = Learner(data, nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16)), loss_func=CrossEntropyFlat(),
                     train_bn=False)
    learn2.layer_groups = [learn2.model]
    learn2.freeze_to(1)
    assert not any(p.requires_grad for p in learn2.model.parameters())
    with pytest.raises(ValueError, match='layer_groups'): learn2.freeze()

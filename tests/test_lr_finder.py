"""The learning-rate finder, measured (API.md "The learning-rate finder, beyond v1"): the default suggestion rule
(`descent`) and `recorder.suggestion()`, the validation-loss mode, a step of the sweep being one optimizer step
(gradient accumulation, float16 overflow), and the layer groups' ratios kept through the sweep."""
import asyncio, functools, math

import numpy as np
import pytest
import torch
from torch import nn
from IPython.core.error import UsageError
from IPython.testing import globalipapp

import fastcb_nb.lr_finder as lr_finder_mod
from fastcb_nb.core import ArgumentError, defaults
from fastcb_nb.callback import Callback
from fastcb_nb.callbacks import AccumulateScheduler
from fastcb_nb.fp16 import MixedPrecision  # noqa: F401  (adds Learner.to_fp16)
from fastcb_nb.learner import CrossEntropyFlat
from fastcb_nb.lr_finder import DEFAULT_SUGGESTION, LRFinder, descent_lr, lr_suggestions
from fastcb_nb.recorder import Recorder
from fastcb_nb.magics import auto_lr
from fastcb_nb.testing import Probe, RaiseAt, ScriptedLoss, quiet, tiny_learner, tiny_model
from fastcb_nb.widgets import LRFinderPicker, default_max_lr

NAN = float('nan')


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def learner(n_batches=10, bs=8, n_valid=16, **kwargs):
    "A tiny classification learner with `n_batches` training batches per epoch (CPU, silent)."
    kwargs.setdefault('silent', True)
    return tiny_learner(n_batches * bs, n_valid, bs, **kwargs)


def run(fn, *args, **kwargs):
    with quiet(): return fn(*args, **kwargs)


def schedule(num_it, start=1e-7, end=10.):
    return [start * (end / start) ** (i / num_it) for i in range(num_it)]


def snapshot(learn):
    "The weights and buffers, the torch optimizer's state and param groups, the hyper-parameters."
    model = {k: v.clone() for k, v in learn.model.state_dict().items()}
    sd = learn.opt.opt.state_dict()
    state = {i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()} for i, s in sd['state'].items()}
    return model, state, [dict(g) for g in sd['param_groups']], learn.opt.hypers()


def assert_same(before, learn):
    model, state, groups, hypers = before
    assert model.keys() == learn.model.state_dict().keys()
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in model.items())
    sd = learn.opt.opt.state_dict()
    assert state.keys() == sd['state'].keys()
    for i, s in state.items():
        for k, v in s.items(): assert torch.equal(v, sd['state'][i][k]) if torch.is_tensor(v) else v == sd['state'][i][k]
    assert groups == [dict(g) for g in sd['param_groups']] and hypers == learn.opt.hypers()


def trained(**kwargs):
    "A learner whose optimizer has state (one epoch of training)."
    learn = learner(**kwargs)
    run(learn.fit, 1, 1e-2)
    return learn


class StepCounter:
    "Counts the torch optimizer's real steps and the rate of the last layer group at each one."
    def __init__(self, learn):
        if learn.opt is None: learn.create_opt(1e-3, learn.wd)
        self.lrs = []
        self.handle = learn.opt.opt.register_step_post_hook(lambda o, *a: self.lrs.append(o.param_groups[-1]['lr']))
    def __len__(self): return len(self.lrs)


class CountingDL:
    "A validation loader that counts how often it is iterated."
    def __init__(self, dl): self.dl, self.iterations = dl, 0
    def __len__(self): return len(self.dl)
    def __iter__(self):
        self.iterations += 1
        return iter(self.dl)


# ----------------------------------------------------------------------------------------- the default suggestion
V1_TRACE = [3 - 0.02 * i if i < 70 else 1.6 + 0.3 * (i - 70) for i in range(100)]


def test_default_rule_is_descent_and_suggestion_returns_it():
    assert DEFAULT_SUGGESTION == 'descent'
    learn = learner(loss_func=ScriptedLoss(V1_TRACE))
    run(learn.lr_find, stop_div=False)
    rec = learn.lr_find_recorder
    s = rec.suggestions()
    assert list(s) == ['min_grad', 'valley', 'steep', 'min_loss', 'descent'] and all(type(v) is float for v in s.values())
    assert rec.suggestion() == s['descent'] == lr_suggestions(rec.lrs, rec.losses)['descent']
    assert rec.suggestion(skip_start=0, skip_end=0) == rec.suggestions(0, 0)['descent']
    assert rec.lrs[10] <= s['descent'] <= rec.lrs[-6]
    # the v1 and v2 rules are still there, unchanged, by name
    assert s['min_grad'] == rec.lrs[69] and s['min_loss'] == rec.lrs[71] / 10
    with pytest.raises(ValueError, match='skip_start'): rec.suggestion(skip_start=-1)


def test_descent_rule_on_shapes():
    lx = np.linspace(-7, 1, 100, endpoint=False)
    lrs = 10 ** lx
    y = 0.5 + 1.8 / (1 + np.exp((lx + 2) / 0.375)) + np.where(lx > -0.5, 20 * (lx + 0.5) ** 2, 0.)
    r = descent_lr(lrs, y)
    assert 10 ** -2.3 < r < 10 ** -1.6 < lrs[np.argmin(y)]                 # on the way down, below the minimum
    level = y.min() + 0.4 * (np.median(y[lx <= lx[0] + 1]) - y.min())
    assert abs(np.interp(np.log10(r), lx, y) - level) < 0.05                # 60% of the drop covered
    assert math.isclose(descent_lr(lrs, y - 10), r) and math.isclose(descent_lr(lrs, 5 * y), r)
    assert descent_lr(lrs, np.linspace(1, 3, 100)) == lrs[0]                # rising: lr at the minimum / 10, clipped
    assert lrs[0] <= descent_lr(lrs, np.ones(100)) <= lrs[-1]
    assert lrs[0] < descent_lr(lrs, 2 - lx / 10) < lrs[-1]                  # never diverges
    assert lrs[0] <= descent_lr(lrs[:2], [1., 0.9]) <= lrs[1] and descent_lr([1e-3], [1.]) == 1e-3
    s = lr_suggestions(lrs, np.r_[y[:60], np.full(40, NAN)])                # a NaN tail is cut off
    assert math.isfinite(s['descent']) and lrs[10] <= s['descent'] <= lrs[59]


def test_preview_auto_and_picker_start_from_the_default(make_learner):
    learn = make_learner(n_train=1024, bs=16)
    assert default_max_lr(learn) == defaults.lr and auto_lr(learn) == (defaults.lr, 'the default rate')
    run(learn.lr_find, num_it=60, end_lr=1)
    lr = learn.lr_find_recorder.suggestion()
    assert default_max_lr(learn) == lr
    assert auto_lr(learn) == (lr, 'the descent suggestion of the last lr_find')
    p = LRFinderPicker(learn)
    assert p.default_method == 'descent' and p.default_lr == lr and math.isclose(p.value, lr, rel_tol=1e-3)
    assert p.default_button.description == f'descent (default): {lr:.2e}'
    assert 'fcb-default-lr' in p.default_button._dom_classes
    assert not [c for c in p.default_button._dom_classes if c.startswith('fcb-suggest-')]
    p.suggestion_buttons['min_loss'].click()
    p.default_button.click()
    assert p.value == lr
    learn.lr = 2e-3
    assert default_max_lr(learn) == 2e-3 and auto_lr(learn) == (2e-3, 'learn.lr')


def test_picker_marks_every_rule_and_coinciding_ones_stay_visible(make_learner):
    learn = make_learner(n_train=1024, bs=16)
    run(learn.lr_find, num_it=60, end_lr=1)
    rec = learn.lr_find_recorder
    p = LRFinderPicker(learn)
    lines = [l for l in p._ax.get_lines() if l.get_marker() not in ('None', '')]
    labels = [l.get_label() for l in lines]
    assert len(lines) == 5 and len({l.get_marker() for l in lines}) == 5
    assert sum('(default)' in t for t in labels) == 1 and labels[0].startswith('descent (default) ')
    assert [t.get_text() for t in p._ax.get_legend().get_texts()] == labels
    assert lines[0].get_markerfacecolor() != 'none' and all(l.get_markerfacecolor() == 'none' for l in lines[1:])
    # a flat curve: descent (no descent: its fallback), min_grad, valley and steep all give the same rate; their
    # four markers are at one point, each of its own shape, the default's filled under the hollow others
    rec.losses = [1.] * len(rec.lrs)
    p = LRFinderPicker(learn)
    pts = {}
    for l in (l for l in p._ax.get_lines() if l.get_marker() not in ('None', '')):
        pts.setdefault(float(l.get_xdata()[0]), []).append((l.get_label().split()[0], l.get_marker()))
    shared = pts[p.default_lr]
    assert {name for name, _ in shared} == {'descent', 'min', 'valley', 'steep'} and len({m for _, m in shared}) == 4
    assert sum(map(len, pts.values())) == 5 and len(p._ax.get_legend().get_texts()) == 5


# ------------------------------------------------------------------------------------------------ validation mode
def test_valid_curve_follows_the_validation_loss_at_every_step():
    values = [2. + math.sin(k / 3) for k in range(200)]
    learn = learner(loss_func=ScriptedLoss(valid=values), n_valid=16, bs=8)    # 2 validation batches of 8
    run(learn.lr_find, num_it=40, valid=True, stop_div=False)
    finder, rec = learn.lr_finder, learn.lr_find_recorder
    assert learn.loss_func.valid_calls == 80                                  # both batches, after each of 40 steps
    assert np.allclose(finder.valid_losses, [(values[2 * k] + values[2 * k + 1]) / 2 for k in range(40)])
    assert len(rec.lrs) == len(rec.losses) == len(rec.moms) == 40 and rec.losses == finder.losses
    assert np.ptp(rec.losses) > 0.3                                          # not flat
    smooth, ref = None, []
    for n, v in enumerate(finder.valid_losses, 1):                          # smoothed as the training loss is
        smooth = v if n == 1 else smooth + (v - smooth) * 0.02 / (1 - 0.98 ** n)
        ref.append(smooth)
    assert np.allclose(rec.losses, ref, rtol=1e-12)
    assert np.allclose(rec.lrs, schedule(40), rtol=1e-12)


def test_valid_n_uses_the_first_n_batches_and_a_fresh_pass_each_step():
    learn = learner(loss_func=ScriptedLoss(valid=[1.] * 500), n_valid=32, bs=8)   # 4 validation batches
    counting = learn.data.valid_dl = CountingDL(learn.data.valid_dl)
    run(learn.lr_find, num_it=25, valid=3, stop_div=False)
    assert counting.iterations == 25 and learn.loss_func.valid_calls == 75
    assert learn.lr_finder.valid == 3


def test_valid_mode_restores_weights_modes_and_optimizer_and_evaluates_in_eval_mode():
    learn = trained(model=tiny_model(bn=True), n_valid=32)
    before = snapshot(learn)
    learn.model.train()
    learn.model[1].eval()                                                   # a frozen BatchNorm: modes differ by module
    modes = [m.training for m in learn.model.modules()]
    seen = []
    hook = learn.model.register_forward_hook(lambda m, i, o: seen.append((torch.is_grad_enabled(), m.training)))
    run(learn.lr_find, num_it=30, valid=True)
    hook.remove()
    assert_same(before, learn)
    assert [m.training for m in learn.model.modules()] == modes             # the modes as they were, module by module
    assert {s for s in seen if not s[0]} == {(False, False)}                 # validation: no grad, eval mode
    assert {s for s in seen if s[0]} == {(True, True)}                       # training: train mode put back each time
    assert sum(not g for g, _ in seen) == len(learn.lr_finder.valid_losses) * 4           # 4 validation batches


def test_valid_mode_stops_on_the_validation_curve():
    learn = learner(loss_func=ScriptedLoss(valid=[1.] * 20 + [100.] * 80), n_valid=8)   # 1 validation batch
    run(learn.lr_find, valid=True)
    rec = learn.lr_find_recorder
    assert learn.lr_finder.stop == 20 and len(rec.losses) == len(rec.lrs) == 21
    assert rec.losses[19] == 1. and rec.losses[20] > 4


def test_valid_mode_suggestions_picker_and_alr_find(make_learner):
    a, b = make_learner(n_train=512, bs=16), make_learner(n_train=512, bs=16)
    run(a.lr_find, valid=2)
    run(asyncio.run, b.alr_find(valid=2))
    assert a.recorder.losses == b.recorder.losses and a.recorder.lrs == b.recorder.lrs
    s = a.recorder.suggestions()
    assert all(math.isfinite(v) for v in s.values())
    p = LRFinderPicker(a)
    assert p.default_lr == a.recorder.suggestion() and set(p.suggestions) == {'min_grad', 'valley', 'steep', 'min_loss'}


def test_valid_mode_interrupted_keeps_only_validation_points():
    learn = trained(n_valid=16)
    before = snapshot(learn)
    learn.callbacks.append(RaiseAt(7, KeyboardInterrupt(), event='on_backward_end'))
    with pytest.raises(KeyboardInterrupt): run(learn.lr_find, valid=True)
    learn.callbacks.pop()
    assert_same(before, learn)
    assert len(learn.lr_find_recorder.losses) == len(learn.lr_finder.valid_losses) == 7   # batch 7 never stepped


@pytest.mark.parametrize('valid', [0, -1, 1.5, 'all', None, [1]])
def test_bad_valid_is_refused_before_anything_changes(valid):
    learn = trained()
    before = snapshot(learn)
    with pytest.raises(ArgumentError, match='valid must be False, True or a number of validation batches >= 1'):
        run(learn.lr_find, valid=valid)
    assert_same(before, learn)


def test_valid_without_validation_data_is_refused():
    learn = trained()
    before = snapshot(learn)
    learn.data.valid_dl = None
    for valid in (True, 2):
        with pytest.raises(ArgumentError, match='needs validation data'): run(learn.lr_find, valid=valid)
    assert_same(before, learn)
    assert not hasattr(learn, 'lr_finder')
    run(learn.lr_find, num_it=12)                                          # the training loss still works
    assert len(learn.recorder.losses) == 12
    with pytest.raises(ArgumentError, match='valid'): LRFinder(learn, valid=True)


# ------------------------------------------------------------------------------------------- the Recorder's lists
class RecorderWatch(Callback):
    "At every batch end (after the finder's): is the Recorder's `lrs` the finder's, and how long is it."
    _order = 10
    def __init__(self, learn): self.learn, self.seen = learn, []
    def on_batch_end(self, **kwargs):
        rec, finder = self.learn.recorder, self.learn.lr_finder
        self.seen.append((rec.lrs is finder.lrs and rec.moms is finder.moms, len(rec.lrs), len(rec.moms)))


@pytest.mark.parametrize('n_step', [1, 3])
def test_recorder_lists_are_the_sweeps_during_it_and_copies_after(n_step):
    learn = learner(6, loss_func=CrossEntropyFlat(reduction='sum'))
    if n_step > 1: learn.callbacks.append(AccumulateScheduler(learn, n_step))
    watch = RecorderWatch(learn)
    learn.callbacks.append(watch)
    run(learn.lr_find, num_it=8, stop_div=False)
    rec, finder = learn.lr_find_recorder, learn.lr_finder
    # one point per optimizer step as the sweep goes (the Recorder records no batch's rates), the same at the end
    assert [s[1] for s in watch.seen] == [(i + 1) // n_step for i in range(8 * n_step)]
    assert all(same and n == m for same, n, m in watch.seen)
    assert rec.lrs == finder.lrs and rec.lrs is not finder.lrs and rec.moms == finder.moms and len(rec.losses) == 8
    assert np.allclose(rec.lrs, schedule(8), rtol=1e-12)
    run(learn.fit, 1, 1e-3)                                                # a later run records every batch again
    assert len(learn.recorder.lrs) == len(learn.recorder.moms) == 6


def test_recorder_without_a_run_handler_records_batches_then_gets_the_curve():
    "LRFinder given to `fit_loop` directly (no entry point's run, no handler to mute the Recorder at)."
    from fastcb_nb.loop import fit_loop, run_sync
    learn = learner(5)
    learn.create_opt(1e-3, learn.wd)
    rec, finder, watch = Recorder(learn, silent=True), LRFinder(learn, num_it=4, stop_div=False), RecorderWatch(learn)
    with quiet(): run_sync(fit_loop(1, learn, callbacks=[rec, finder, watch]))
    assert [s[:2] for s in watch.seen] == [(False, n) for n in range(1, 5)]   # its own lists, one rate per batch
    assert learn.recorder.lrs == finder.lrs and len(learn.recorder.lrs) == 4


def test_a_recorder_that_does_more_at_backward_begin_is_still_called():
    class CountingRecorder(Recorder):
        cb_name = 'recorder'                                               # it is `learn.recorder`
        def on_backward_begin(self, **kwargs):
            self.n_calls = getattr(self, 'n_calls', 0) + 1
            super().on_backward_begin(**kwargs)
    learn = learner(6)
    learn.callback_fns[0] = functools.partial(CountingRecorder, silent=True)
    run(learn.lr_find, num_it=8, stop_div=False)
    assert type(learn.recorder) is CountingRecorder
    assert learn.recorder.n_calls == 8 and len(learn.recorder.lrs) == 8
    assert np.allclose(learn.recorder.lrs, schedule(8), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------- accumulation
@pytest.mark.parametrize('n_step,n_batches,drop_last', [(2, 10, False), (3, 10, False), (3, 10, True), (4, 3, False)])
def test_accumulation_one_sweep_step_per_optimizer_step(n_step, n_batches, drop_last):
    learn = learner(n_batches, loss_func=CrossEntropyFlat(reduction='sum'))
    learn.callbacks.append(AccumulateScheduler(learn, n_step, drop_last))
    steps = StepCounter(learn)
    run(learn.lr_find, num_it=20, stop_div=False)
    rec = learn.lr_find_recorder
    assert len(steps) == 20 and np.allclose(steps.lrs, schedule(20), rtol=1e-12)
    assert len(rec.lrs) == len(rec.losses) == len(rec.moms) == 20 and np.allclose(rec.lrs, schedule(20), rtol=1e-12)
    assert learn.lr_finder.stop == 19


def test_accumulation_from_callback_fns_gets_enough_epochs():
    learn = learner(10, loss_func=CrossEntropyFlat(reduction='sum'))
    learn.callback_fns.append(functools.partial(AccumulateScheduler, n_step=5))
    steps = StepCounter(learn)
    run(learn.lr_find, num_it=30, stop_div=False)                          # 2 steps per epoch: 15 epochs
    assert len(steps) == 30 and len(learn.lr_find_recorder.lrs) == 30
    assert learn.lr_find_recorder.nb_batches == [10] * 15


def test_accumulation_divergence_is_judged_per_step():
    # batch losses: 1 for 40 batches, then 1000: with 4 batches a step (8 an epoch), the sweep stops at step 10
    learn = learner(8, loss_func=ScriptedLoss([1.] * 40 + [1000.] * 60))
    learn.callbacks.append(AccumulateScheduler(learn, 4))
    run(learn.lr_find)
    assert learn.lr_finder.stop == 10 and len(learn.lr_find_recorder.losses) == 11
    assert np.allclose(learn.lr_find_recorder.losses[:10], 1., rtol=1e-12) and learn.lr_find_recorder.losses[10] > 4


def test_accumulation_nan_between_steps_stops_at_once():
    learn = learner(10, loss_func=ScriptedLoss([1.] * 9 + [NAN] * 91))
    learn.callbacks.append(AccumulateScheduler(learn, 4))
    run(learn.lr_find)
    assert learn.loss_func.calls == 10                                     # batch 9 is not a step, it stops there
    assert learn.lr_finder.stop == 2 and len(learn.lr_find_recorder.losses) == 3
    assert math.isnan(learn.lr_find_recorder.losses[-1])                   # the step in progress, with its loss


def test_plain_mode_broadcasts_once_per_step(monkeypatch):
    calls = []
    monkeypatch.setattr(lr_finder_mod, 'broadcast_from_rank0', lambda v: calls.append(v) or v)
    learn = learner(10)
    run(learn.lr_find, num_it=15, stop_div=False)
    assert calls == []                                  # one process: nothing to agree on
    monkeypatch.setattr(lr_finder_mod, 'distrib_running', lambda: True)    # as a process of a 2-process run sees it
    monkeypatch.setattr(lr_finder_mod, 'num_distrib', lambda: 2)
    run(learn.lr_find, num_it=15, stop_div=False)
    assert len(calls) == 15 and calls[-1] is True and not any(calls[:-1])


# ---------------------------------------------------------------------------------------------- float16 overflow
def poisoner(learn, at):
    "A callback giving the first weight an infinite gradient at training iterations `at` (before MixedPrecision)."
    def poison(iteration, **kwargs):
        if iteration in at: learn.model[0].weight.grad[0, 0] = float('inf')
    return Probe('on_backward_end', poison, order=0)


def test_fp16_overflow_skipped_steps_are_not_steps_nor_divergence():
    learn = learner(10).to_fp16(dtype='float16', loss_scale=2. ** 12)
    at = {0, 1, 2, 7, 15, 16}                                              # the first steps, as dynamic scaling gives
    skipped = Probe('on_step_end', lambda skip_step, **kwargs: skip_step)
    learn.callbacks += [poisoner(learn, at), skipped]
    steps = StepCounter(learn)
    run(learn.lr_find, num_it=20)                                          # stop_div on
    rec = learn.lr_find_recorder
    assert skipped.seen.count(True) == len(at) and len(skipped.seen) == 20 + len(at)
    assert len(steps) == 20 and np.allclose(steps.lrs, schedule(20), rtol=1e-12)
    assert np.allclose(rec.lrs, schedule(20), rtol=1e-12) and len(set(rec.lrs)) == 20
    assert len(rec.losses) == 20 and all(map(math.isfinite, rec.losses)) and learn.lr_finder.stop == 19
    assert learn.mp_cb.scaler.get_scale() == 2. ** 12 / 2 ** len(at)


def test_fp16_many_skips_do_not_cut_the_sweep_short():
    learn = learner(5).to_fp16(dtype='float16', loss_scale=2. ** 12)
    learn.callbacks.append(poisoner(learn, set(range(5))))                 # a whole epoch of overflow
    steps = StepCounter(learn)
    run(learn.lr_find, num_it=20, stop_div=False)
    assert len(steps) == 20 and len(learn.lr_find_recorder.lrs) == 20


def test_fp16_restores_everything():
    learn = trained(n_batches=10).to_fp16(dtype='float16', loss_scale=2. ** 12)
    run(learn.fit, 1, 1e-3)
    before = snapshot(learn)
    learn.callbacks.append(poisoner(learn, {3}))
    run(learn.lr_find, num_it=20)
    learn.callbacks.pop()
    assert_same(before, learn)


# -------------------------------------------------------------------------------------------------- layer groups
def group_learner():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    return learner(10, model=model, layer_groups=[model[0], model[2], model[4]])


class GroupRates(Callback):
    "The torch param groups' rates at each training batch."
    def __init__(self, learn): self.learn, self.rows = learn, []
    def on_batch_begin(self, train, **kwargs):
        if train: self.rows.append([g['lr'] for g in self.learn.opt.opt.param_groups])


@pytest.mark.parametrize('start,end,ratios', [
    (slice(1e-7, 1e-5), slice(1e-3, 1e-1), [1e-2, 1e-1, 1.]),
    ([1e-8, 1e-7, 1e-6], [1e-2, 1e-1, 1.], [1e-2, 1e-1, 1.]),
    (slice(1e-7, 1e-5), 10., [1e-2, 1e-1, 1.]),                             # a single end rate takes start's ratios
    (1e-7, [1e-1, 1e-1, 1.], [0.1, 0.1, 1.]),                                # and a single start rate end's
    (1e-7, 10., [1., 1., 1.]),
])
def test_layer_group_ratios_kept_at_every_step(start, end, ratios):
    learn = group_learner()
    rows = GroupRates(learn)
    learn.callbacks.append(rows)
    run(learn.lr_find, start, end, num_it=15, stop_div=False)
    got = np.array(rows.rows)
    assert got.shape == (15, 3)
    assert np.allclose(got / got[:, -1:], [ratios] * 15, rtol=1e-12, atol=0)
    last_start = start.stop if isinstance(start, slice) else np.ravel(start)[-1]
    last_end = end.stop if isinstance(end, slice) else np.ravel(end)[-1]
    assert np.allclose(got[:, -1], schedule(15, last_start, last_end), rtol=1e-12)
    assert np.allclose(learn.lr_find_recorder.lrs, got[:, -1], rtol=1e-12)


def test_layer_group_ratios_must_match():
    learn = group_learner()
    run(learn.fit, 1, 1e-3)
    before = snapshot(learn)
    with pytest.raises(ArgumentError, match='same ratios between layer groups as start_lr'):
        run(learn.lr_find, [1e-7, 1e-6, 1e-5], [1e-2, 1e-2, 1e-1])
    assert_same(before, learn)


# ------------------------------------------------------------------------------------------------------- %lr_find
@pytest.fixture
def ip():
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    if 'fastcb_nb' not in shell.extension_manager.loaded: shell.run_line_magic('load_ext', 'fastcb_nb')
    saved = dict(shell.user_ns)
    yield shell
    shell.user_ns.clear()
    shell.user_ns.update(saved)


def test_lr_find_magic_valid_option(ip):
    learn = ip.user_ns['learn'] = learner(8, n_valid=32)
    run(ip.run_line_magic, 'lr_find', 'learn --num_it 20 --valid')
    assert learn.lr_finder.valid is True and len(learn.lr_finder.valid_losses) == len(learn.lr_find_recorder.losses)
    picker = run(ip.run_line_magic, 'lr_find', 'learn --num_it 20 --valid 2')
    assert learn.lr_finder.valid == 2 and isinstance(picker, LRFinderPicker)
    run(ip.run_line_magic, 'lr_find', 'learn --num_it 20')
    assert learn.lr_finder.valid is False
    for line, msg in [('learn --valid 0', 'must be an integer >= 1'), ('learn --valid x', "expected an integer")]:
        with pytest.raises(UsageError, match=msg): run(ip.run_line_magic, 'lr_find', line)
    learn.data.valid_dl = None
    with pytest.raises(UsageError) as info: run(ip.run_line_magic, 'lr_find', 'learn --valid')
    assert str(info.value).startswith('%lr_find: valid=True needs validation data') and '\n' not in str(info.value)

"""lr_find, suggestions, OneCycleScheduler / fit_one_cycle, GeneralScheduler / fit_fc and the schedule preview,
checked against fastai v1's measured behaviour (V1_BEHAVIOUR.md §4, §5, §7) and API.md's differences 1, 2, 5, 6."""
import asyncio, contextlib, functools, io, math, os

import numpy as np
import pytest
import torch
from torch import nn

import fastcb_nb.schedule as schedule_mod
import fastcb_nb.lr_finder as lr_finder_mod
from fastcb_nb.core import defaults, annealing_cos, annealing_exp, annealing_linear
from fastcb_nb.callback import Callback
from fastcb_nb.learner import Learner, DataBunch, CrossEntropyFlat, accuracy, synthetic_data
from fastcb_nb.schedule import (LRFinder, lr_suggestions, TrainingPhase, GeneralScheduler, OneCycleScheduler,
                                FlatCosAnnealScheduler, fit_one_cycle, lr_find, simulate_schedule, one_cycle_schedule)
from fastcb_nb.testing import ScriptedLoss, RaiseAt as _RaiseAt, tiny_learner, tiny_model, quiet as silenced


# ---------------------------------------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Tiny models run fastest on one intra-op thread (much faster on a busy 2-core machine); restored afterwards."
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def make_learner(n_batches=10, bs=8, loss_func=None, layer_groups=1, bn=False, opt_func=None, n_valid=16, **kwargs):
    "A tiny classification learner with `n_batches` training batches per epoch, on the CPU."
    model = None
    if layer_groups == 3:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
        kwargs['layer_groups'] = [model[0], model[2], model[4]]
    elif bn: model = tiny_model(bn=True)
    if opt_func is not None: kwargs['opt_func'] = opt_func
    return tiny_learner(n_batches * bs, n_valid, bs, model=model, loss_func=loss_func or CrossEntropyFlat(),
                        metrics=[accuracy], **kwargs)


def quiet(fn, *args, **kwargs):
    with silenced(): return fn(*args, **kwargs)


class RecordHypers(Callback):
    "Records, at each training batch_begin, what the torch param groups hold (after the Recorder, order -10)."
    def __init__(self, learn, key='lr'): self.learn, self.key, self.rows = learn, key, []
    def on_batch_begin(self, train, **kwargs):
        if train: self.rows.append([pg[self.key] for pg in self.learn.opt.opt.param_groups])


def RaiseAt(at, exc):
    "Raise `exc` in on_backward_end of training iteration `at` (after the gradients exist, before the step)."
    return _RaiseAt(at, exc, event='on_backward_end')


def snapshot(learn):
    "Everything lr_find must restore: weights and buffers, the optimizer state, the hyper-parameters."
    model = {k: v.clone() for k, v in learn.model.state_dict().items()}
    if learn.opt is None: return model, None, None, None
    sd = learn.opt.opt.state_dict()
    state = {i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()} for i, s in sd['state'].items()}
    groups = [dict(g) for g in sd['param_groups']]
    return model, state, groups, learn.opt.hypers()


def assert_same(before, learn):
    model, state, groups, hypers = before
    now_model, now_state, now_groups, now_hypers = snapshot(learn)
    assert model.keys() == now_model.keys() and all(torch.equal(model[k], now_model[k]) for k in model)
    assert (state is None) == (now_state is None)
    if state is None: return
    assert state.keys() == now_state.keys()
    for i in state:
        assert state[i].keys() == now_state[i].keys()
        for k in state[i]:
            a, b = state[i][k], now_state[i][k]
            assert torch.equal(a, b) if torch.is_tensor(a) else a == b
    assert groups == now_groups and hypers == now_hypers


def trained_learner(**kwargs):
    "A learner after one epoch of training, so that the optimizer has state (Adam moments) and its own hypers."
    learn = make_learner(**kwargs)
    quiet(learn.fit, 1, 1e-2)
    return learn


# fastai v1 table A (cyc_len=1, 10 batches, max_lr=1e-2) and table B (pct_start=.25, div 10, final_div 100, 20 batches)
TABLE_A = [(4.0000000000e-04, 0.9500000000), (2.8000000000e-03, 0.9250000000), (7.6000000000e-03, 0.8750000000),
           (1.0000000000e-02, 0.8500000000), (9.5048463201e-03, 0.8549515566), (8.1174565395e-03, 0.8688255099),
           (6.1126202194e-03, 0.8888739533), (3.8874197806e-03, 0.9111260467), (1.8825834605e-03, 0.9311744901),
           (4.9519367987e-04, 0.9450484434)]
TABLE_B = [(1.0000000000e-03, 0.9500000000), (1.8594235253e-03, 0.9404508497), (4.1094235253e-03, 0.9154508497),
           (6.8905764747e-03, 0.8845491503), (9.1405764747e-03, 0.8595491503), (1.0000000000e-02, 0.8500000000),
           (9.8918306236e-03, 0.8510926200), (9.5720500153e-03, 0.8543227271), (9.0546341222e-03, 0.8595491503),
           (8.3621965015e-03, 0.8665434697), (7.5250000000e-03, 0.8750000000), (6.5796341222e-03, 0.8845491503),
           (5.5674158932e-03, 0.8947735768), (4.5325841068e-03, 0.9052264232), (3.5203658778e-03, 0.9154508497),
           (2.5750000000e-03, 0.9250000000), (1.7378034985e-03, 0.9334565303), (1.0453658778e-03, 0.9404508497),
           (5.2794998467e-04, 0.9456772729), (2.0816937637e-04, 0.9489073800)]


def close(a, b, rel=1e-6):
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=rel, abs_tol=0) for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------------- one cycle (§5)
def test_table_a():
    learn = make_learner(10)
    quiet(learn.fit_one_cycle, 1, 1e-2)
    rec = learn.recorder
    assert close(rec.lrs, [r[0] for r in TABLE_A]) and close(rec.moms, [r[1] for r in TABLE_A])
    assert all(type(v) is float for v in rec.lrs + rec.moms)                     # difference 5
    assert math.isclose(learn.opt.lr, 4e-8, rel_tol=1e-9) and learn.opt.mom == 0.95
    assert rec.nb_batches == [10]


def test_table_b():
    learn = make_learner(20)
    quiet(learn.fit_one_cycle, 1, 1e-2, pct_start=0.25, div_factor=10, final_div=100)
    assert close(learn.recorder.lrs, [r[0] for r in TABLE_B]) and close(learn.recorder.moms, [r[1] for r in TABLE_B])


def test_case_c_default_max_lr():
    learn = make_learner(5)
    assert learn.lr is None and defaults.lr == slice(3e-3)
    quiet(learn.fit_one_cycle, 2)
    ref = [1.2e-4, 8.4e-4, 2.28e-3, 3e-3, 2.851454e-3, 2.435237e-3, 1.833786e-3, 1.166226e-3, 5.64775e-4, 1.485581e-4]
    assert close(learn.recorder.lrs, ref, rel=1e-6) and learn.recorder.nb_batches == [5, 5]
    assert close(learn.recorder.moms, [r[1] for r in TABLE_A])
    assert all(type(v) is float for v in learn.recorder.lrs)


def test_max_lr_none_uses_learn_lr():
    learn = make_learner(5)
    learn.lr = 5e-3
    quiet(learn.fit_one_cycle, 1)
    assert max(learn.recorder.lrs) == 5e-3


def test_case_e_resume_start_epoch():
    learn = make_learner(4)
    quiet(learn.fit_one_cycle, 3, 1e-2)
    full = learn.recorder.lrs
    ref = [4e-4, 2.8e-3, 7.6e-3, 1e-2, 9.698464e-3, 8.830227e-3, 7.500010e-3, 5.868257e-3, 4.131783e-3, 2.500030e-3,
           1.169813e-3, 3.015757e-4]
    assert close(full, ref, rel=1e-6)
    full_moms = learn.recorder.moms
    quiet(learn.fit_one_cycle, 3, 1e-2, start_epoch=1)
    rec = learn.recorder
    assert rec.lrs == full[4:] and rec.moms == full_moms[4:] and rec.nb_batches == [4, 4]
    assert [row[0] for row in rec.stats_rows] == ['1', '2']                      # the epochs printed


def test_case_f_no_batch_beyond_schedule():
    "Difference 2: with tot_epochs=1 < cyc_len=2, exactly len(train_dl)*tot_epochs batches are trained."
    learn = make_learner(4)
    quiet(learn.fit_one_cycle, 2, 1e-2, tot_epochs=1)
    rec = learn.recorder
    assert close(rec.lrs, [4e-4, 1e-2, 7.50001e-3, 2.50003e-3], rel=1e-5)
    assert rec.nb_batches == [4] and len(rec.val_losses) == 1 and rec.val_losses[0] is not None
    assert math.isclose(learn.opt.lr, 4e-8, rel_tol=1e-9)


@pytest.mark.parametrize('cyc_len,tot_epochs', [(5, 2), (3, 3), (4, None)])
def test_exact_batch_count(cyc_len, tot_epochs):
    learn = make_learner(3)
    quiet(learn.fit_one_cycle, cyc_len, 1e-2, tot_epochs=tot_epochs)
    assert sum(learn.recorder.nb_batches) == len(learn.recorder.lrs) == 3 * (tot_epochs or cyc_len)


def test_case_g_discriminative_rates():
    learn = make_learner(10, layer_groups=3)
    rows = RecordHypers(learn)
    quiet(learn.fit_one_cycle, 1, slice(1e-4, 1e-2), callbacks=[rows])
    assert close(learn.recorder.lrs, [r[0] for r in TABLE_A])                  # the last group's rates
    maxes = [1e-4, 1e-3, 1e-2]
    for i, row in enumerate(rows.rows):                                          # each group follows its own max
        assert close(row, [TABLE_A[i][0] * m / 1e-2 for m in maxes], rel=1e-9)
    assert close(learn.opt.read_val('lr'), [4e-10, 4e-9, 4e-8], rel=1e-9)


def test_case_h_empty_first_phase():
    learn = make_learner(3)
    quiet(learn.fit_one_cycle, 1, 1e-2, pct_start=0.1)
    assert close(learn.recorder.lrs, [4e-4, 1e-2, 7.50001e-3], rel=1e-6)


@pytest.mark.parametrize('n,pct', [(10, 0.3), (20, 0.25), (7, 0.5), (33, 0.9), (50, 0.1), (4, 0.3)])
def test_one_cycle_invariants(n, pct):
    learn = make_learner(n)
    lrs, moms = one_cycle_schedule(learn, 1, 1e-2, pct_start=pct)
    a1 = int(n * pct)
    assert len(lrs) == n and int(np.argmax(lrs)) == int(np.argmin(moms)) == a1
    assert lrs[a1] == 1e-2 and moms[a1] == 0.85 and lrs[0] == 1e-2 / 25 and moms[0] == 0.95
    assert all(a < b for a, b in zip(lrs[:a1], lrs[1:a1 + 1])) and all(a > b for a, b in zip(lrs[a1:], lrs[a1 + 1:]))


def test_one_cycle_real_run_invariant():
    learn = make_learner(13)
    quiet(learn.fit_one_cycle, 2, 1e-2, pct_start=0.4)
    rec = learn.recorder
    assert int(np.argmax(rec.lrs)) == int(np.argmin(rec.moms)) == int(26 * 0.4)


def test_sgd_momentum_placement():
    learn = make_learner(10, opt_func=functools.partial(torch.optim.SGD, momentum=0.9))
    rows = RecordHypers(learn, 'momentum')
    quiet(learn.fit_one_cycle, 1, 1e-2, callbacks=[rows])
    assert [r[0] for r in rows.rows] == learn.recorder.moms and close(learn.recorder.moms, [r[1] for r in TABLE_A])
    assert 'betas' not in learn.opt.opt.param_groups[0]


def test_adam_momentum_placement():
    learn = make_learner(10)
    rows = RecordHypers(learn, 'betas')
    quiet(learn.fit_one_cycle, 1, 1e-2, callbacks=[rows])
    assert [r[0][0] for r in rows.rows] == learn.recorder.moms and close(learn.recorder.moms, [r[1] for r in TABLE_A])
    assert all(r[0][1] == 0.99 for r in rows.rows)                              # beta2 untouched


def test_get_state_and_scalar_moms():
    learn = make_learner(4)
    cb = OneCycleScheduler(learn, 1e-2)
    assert cb.get_state() == {'lr_max': 0.01, 'div_factor': 25.0, 'pct_start': 0.3, 'final_div': 250000.0,
                              'moms': (0.95, 0.85), 'start_epoch': None, 'tot_epochs': None}
    assert learn.one_cycle_scheduler is cb
    quiet(learn.fit, 1, callbacks=[cb])
    assert set(cb.get_state()) == {'lr_max', 'div_factor', 'pct_start', 'final_div', 'moms', 'start_epoch', 'tot_epochs'}
    assert OneCycleScheduler(learn, 1e-2, moms=0.9).moms == (0.9, 0.9)
    assert OneCycleScheduler(learn, 1e-2, div_factor=10).final_div == 1e5


def test_afit_one_cycle_same_as_fit():
    a, b = make_learner(6), make_learner(6)
    quiet(a.fit_one_cycle, 2, 1e-2)
    quiet(asyncio.run, b.afit_one_cycle(2, 1e-2))
    assert a.recorder.lrs == b.recorder.lrs and a.recorder.losses == b.recorder.losses
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    c = make_learner(6)
    gen = c.fit_one_cycle_gen(2, 1e-2)                                           # nothing runs until iterated
    assert c.opt is None
    quiet(list, gen)
    assert c.recorder.lrs == a.recorder.lrs


ONE_CYCLE_BAD = [(dict(max_lr=0), 'max_lr'), (dict(max_lr=-1e-3), 'max_lr'), (dict(max_lr=float('nan')), 'max_lr'),
                 (dict(max_lr=slice(0, 1e-2)), 'max_lr'), (dict(pct_start=0), 'pct_start'),
                 (dict(pct_start=1), 'pct_start'), (dict(pct_start=1.5), 'pct_start'), (dict(div_factor=0), 'div_factor'),
                 (dict(div_factor=-5), 'div_factor'), (dict(final_div=0), 'final_div'), (dict(cyc_len=0), 'cyc_len'),
                 (dict(cyc_len=1.5), 'cyc_len'), (dict(start_epoch=3), 'start_epoch'),
                 (dict(tot_epochs=2, start_epoch=2), 'start_epoch'), (dict(start_epoch=-1), 'start_epoch'),
                 (dict(tot_epochs=0), 'tot_epochs'), (dict(moms=(0.95, 1.0)), 'moms'), (dict(moms=(-0.1, 0.8)), 'moms'),
                 (dict(moms=(0.9, 0.8, 0.7)), 'moms'), (dict(wd=-1e-2), 'wd')]


@pytest.mark.parametrize('kwargs,name', ONE_CYCLE_BAD)
def test_one_cycle_bad_input(kwargs, name):
    learn = trained_learner(n_batches=3)
    before = snapshot(learn)
    kwargs = {'cyc_len': 3, 'max_lr': 1e-2, **kwargs}
    with pytest.raises(ValueError, match=name):
        quiet(learn.fit_one_cycle, **kwargs)
    assert_same(before, learn)
    if name != 'wd':
        with pytest.raises(ValueError, match=name):
            one_cycle_schedule(learn, **kwargs)


# -------------------------------------------------------------------------------------------- preview / simulation
@pytest.mark.parametrize('kwargs', [dict(cyc_len=1, max_lr=1e-2), dict(cyc_len=3, max_lr=slice(1e-4, 1e-2)),
                                    dict(cyc_len=3, max_lr=1e-2, start_epoch=1),
                                    dict(cyc_len=4, max_lr=3e-3, tot_epochs=2, pct_start=0.5, moms=(0.9, 0.8)),
                                    dict(cyc_len=2, max_lr=1e-3, div_factor=10, final_div=50, pct_start=0.1)])
def test_one_cycle_schedule_equals_run(kwargs):
    learn = make_learner(5, layer_groups=3)
    preview = one_cycle_schedule(learn, **kwargs)
    assert learn.opt is None and not hasattr(learn, 'one_cycle_scheduler')
    quiet(learn.fit_one_cycle, **kwargs)
    assert preview == (learn.recorder.lrs, learn.recorder.moms)


def test_one_cycle_schedule_leaves_learner_alone():
    learn = trained_learner(n_batches=4, opt_func=functools.partial(torch.optim.SGD, momentum=0.5))
    before = snapshot(learn)
    lrs, moms = one_cycle_schedule(learn, 2, 1e-2)
    assert_same(before, learn)
    quiet(learn.fit_one_cycle, 2, 1e-2)
    assert (lrs, moms) == (learn.recorder.lrs, learn.recorder.moms)


def test_simulate_general_schedule_equals_run():
    learn = make_learner(4)
    phases = [TrainingPhase(3).schedule_hp('lr', (1e-3, 1e-2), annealing_cos),
              TrainingPhase(6).schedule_hp('lr', (1e-2, 1e-4), annealing_exp).schedule_hp('mom', (0.8, 0.9)),
              TrainingPhase(2).schedule_hp('lr', 1e-4).schedule_hp('mom', 0.7)]
    sched = GeneralScheduler(learn, phases)
    preview = simulate_schedule(learn, sched, 5)
    assert sched.learn is learn and learn.opt is None
    quiet(learn.fit, 5, callbacks=[sched])
    assert preview == (learn.recorder.lrs, learn.recorder.moms) and len(preview[0]) == 11
    assert preview[1][:3] == [0.9] * 3                                           # mom not scheduled: AdamW's beta1


def test_simulate_fit_fc_and_lr_argument():
    learn = make_learner(5)
    sched = FlatCosAnnealScheduler(learn, 2e-3, tot_epochs=2, moms=(0.95, 0.85))
    preview = simulate_schedule(learn, sched, 2, lr=2e-3)
    quiet(learn.fit, 2, 2e-3, callbacks=[sched])
    assert preview == (learn.recorder.lrs, learn.recorder.moms)
    only_mom = GeneralScheduler(learn, [TrainingPhase(7).schedule_hp('mom', (0.9, 0.8))])
    preview = simulate_schedule(learn, only_mom, 2, lr=5e-4)                   # lr as `fit` sets it
    quiet(learn.fit, 2, 5e-4, callbacks=[only_mom])
    assert preview == (learn.recorder.lrs, learn.recorder.moms) and preview[0] == [5e-4] * 7


# ------------------------------------------------------------------------------------------ general scheduler (§7)
def test_general_scheduler_v1_example_and_reuse():
    learn = make_learner(4)
    phases = [TrainingPhase(3).schedule_hp('lr', (1e-3, 1e-2), annealing_cos).schedule_hp('mom', 0.9),
              TrainingPhase(5).schedule_hp('lr', (1e-2, 1e-4), annealing_exp).schedule_hp('mom', (0.8, 0.9))]
    sched = GeneralScheduler(learn, phases)
    ref_lrs = [1e-3, 3.25e-3, 7.75e-3, 1e-2, 3.9811e-3, 1.5849e-3, 6.3096e-4, 2.5119e-4]
    ref_moms = [0.9] * 4 + [0.82, 0.84, 0.86, 0.88]
    for _ in range(2):                                                           # a second fit replays the schedule
        quiet(learn.fit, 3, callbacks=[sched])
        assert close(learn.recorder.lrs, ref_lrs, rel=1e-4) and close(learn.recorder.moms, ref_moms, rel=1e-9)
        assert learn.recorder.nb_batches == [4, 4]                               # stops with the schedule


def test_general_scheduler_start_epoch():
    learn = make_learner(4)
    phases = lambda: [TrainingPhase(6).schedule_hp('lr', (1e-3, 1e-2)), TrainingPhase(6).schedule_hp('lr', (1e-2, 1e-3))]
    quiet(learn.fit, 3, callbacks=[GeneralScheduler(learn, phases())])
    full = learn.recorder.lrs
    quiet(learn.fit, 3, callbacks=[GeneralScheduler(learn, phases(), start_epoch=1)])
    assert learn.recorder.lrs == full[4:]
    with pytest.raises(ValueError, match='start_epoch'):
        quiet(learn.fit, 2, callbacks=[GeneralScheduler(learn, phases(), start_epoch=2)])


def test_general_scheduler_bad_input():
    learn = make_learner(4)
    with pytest.raises(ValueError, match='name'): TrainingPhase(3).schedule_hp('momentum', 0.9)
    with pytest.raises(ValueError, match='length'): TrainingPhase(-1)
    with pytest.raises(ValueError, match='phases'): GeneralScheduler(learn, [])
    with pytest.raises(ValueError, match='phases'): GeneralScheduler(learn, [TrainingPhase(3)])
    with pytest.raises(ValueError, match='start_epoch'):
        GeneralScheduler(learn, [TrainingPhase(3).schedule_hp('lr', 1e-3)], start_epoch=-1)


def test_fit_fc():
    learn = make_learner(10)
    quiet(learn.fit_fc, 2, 1e-2, start_pct=0.5)
    rec = learn.recorder
    flat = int(20 * 0.5)
    assert rec.lrs[:flat + 1] == [1e-2] * (flat + 1) and rec.nb_batches == [10, 10]
    assert close(rec.lrs[flat:], [annealing_cos(1e-2, 0, i / 10) for i in range(10)], rel=1e-12)
    assert rec.moms == [0.95] * (flat + 1) + [0.85] * (20 - flat - 1)
    learn.lr = 4e-3
    quiet(learn.fit_fc)                                                          # lr=None: learn.lr
    assert learn.recorder.lrs[0] == 4e-3 and len(learn.recorder.lrs) == 10
    for kwargs, name in [(dict(start_pct=1.5), 'start_pct'), (dict(tot_epochs=0), 'tot_epochs'),
                         (dict(lr=-1.), 'lr'), (dict(moms=(1.2, 0.9)), 'moms')]:
        with pytest.raises(ValueError, match=name): quiet(learn.fit_fc, **kwargs)


# -------------------------------------------------------------------------------------------------- lr_find (§4)
def test_lr_find_schedule_table():
    learn = make_learner(10)
    quiet(learn.lr_find, stop_div=False)
    rec = learn.recorder
    ref = {0: 1e-7, 1: 1.2022644e-7, 10: 6.3095734e-7, 25: 1e-5, 50: 1e-3, 75: 1e-1, 99: 8.3176377}
    assert len(rec.lrs) == len(rec.losses) == 100 and rec.nb_batches == [10] * 10 and rec.val_losses == [None] * 10
    assert all(math.isclose(rec.lrs[i], v, rel_tol=1e-6) for i, v in ref.items())
    assert all(math.isclose(lr, 1e-7 * 1e8 ** (i / 100), rel_tol=1e-12) for i, lr in enumerate(rec.lrs))
    assert all(type(v) is float for v in rec.lrs + rec.losses)
    assert all(m == 0.9 for m in rec.moms)                                      # momentum untouched (AdamW)


def test_lr_find_epoch_count():
    learn = make_learner(10, loss_func=ScriptedLoss([1.] * 100))
    quiet(learn.lr_find, num_it=25)
    rec = learn.recorder
    assert rec.nb_batches == [10, 10, 5] and rec.val_losses == [None] * 3 and len(rec.lrs) == 25
    assert learn.loss_func.calls == 25                                           # no validation batch at all


@pytest.mark.parametrize('values,stop_div,n_rec,stop,extra', [
    ([1.] * 37 + [1000.] * 63, True, 38, 37, dict(nb=[10, 10, 10, 8], smooth=(37, 38.2815))),
    ([1.] * 37 + [10.] * 63, True, 49, 48, dict(smooth=(48, 4.0833))),
    ([1.] * 20 + [float('nan')] * 80, True, 21, 20, {}),
    ([1.] * 20 + [float('nan')] * 80, False, 100, 99, {}),
    ([2 - 0.03 * i if i < 50 else 0.5 + 0.5 * (i - 50) for i in range(100)], True, 77, 76,
     dict(best=1.11723, smooth=(76, 4.58822))),
])
def test_lr_find_divergence_reference(values, stop_div, n_rec, stop, extra):
    learn = make_learner(10, loss_func=ScriptedLoss(values))
    quiet(learn.lr_find, stop_div=stop_div)
    rec = learn.recorder
    assert len(rec.lrs) == len(rec.losses) == n_rec and learn.lr_finder.stop == stop
    assert learn.loss_func.calls == n_rec
    if 'nb' in extra: assert rec.nb_batches == extra['nb']
    if 'smooth' in extra:
        i, v = extra['smooth']
        assert math.isclose(rec.losses[i], v, rel_tol=1e-4)
    if 'best' in extra: assert math.isclose(learn.lr_finder.best_loss, extra['best'], rel_tol=1e-4)
    if 'smooth' in extra and extra['smooth'][0] == 48: assert rec.losses[47] < 4 < rec.losses[48]


def test_lr_find_restores_everything():
    learn = trained_learner(bn=True)
    learn.opt.mom, learn.opt.wd = 0.8, 3e-2
    before = snapshot(learn)
    wd, lr_attr = learn.wd, learn.lr
    quiet(learn.lr_find, num_it=30)
    assert_same(before, learn)
    assert learn.wd == wd and learn.lr == lr_attr


@pytest.mark.parametrize('exc', [KeyboardInterrupt(), RuntimeError('boom')])
def test_lr_find_restores_after_interruption(exc):
    learn = trained_learner(bn=True)
    before = snapshot(learn)
    original = learn.model.state_dict()['1.running_mean'].clone()
    learn.callbacks.append(RaiseAt(7, exc))
    with pytest.raises(type(exc)):
        quiet(learn.lr_find)
    learn.callbacks.pop()
    assert_same(before, learn)
    assert torch.equal(learn.model.state_dict()['1.running_mean'], original)
    assert len(learn.lr_find_recorder.lrs) == 8                                  # the partial trace is kept


def test_lr_find_without_optimizer_leaves_none():
    learn = make_learner(5)
    before = snapshot(learn)
    quiet(learn.lr_find, num_it=10)
    assert learn.opt is None
    assert_same(before, learn)
    learn.callbacks.append(RaiseAt(3, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt): quiet(learn.lr_find)
    assert learn.opt is None


def test_lr_find_wd_and_no_file(tmp_path):
    learn = trained_learner(path=tmp_path)
    before = snapshot(learn)
    seen = []
    class SeeWd(Callback):
        def on_train_begin(self, **kwargs): seen.append(learn.opt.wd)
    learn.callbacks.append(SeeWd())
    quiet(learn.lr_find, num_it=12, wd=0.25)
    learn.callbacks.pop()
    assert seen == [0.25] and learn.wd == 1e-2
    assert_same(before, learn)
    assert list(tmp_path.iterdir()) == []                                        # no tmp.pth, no models/ folder


def test_lr_find_discriminative_rates():
    learn = make_learner(10, layer_groups=3)
    rows = RecordHypers(learn)
    learn.callbacks.append(rows)
    quiet(learn.lr_find, slice(1e-7, 1e-5), slice(1e-3, 1e-1), num_it=10)
    ref_last = [1e-5, 2.512e-5, 6.310e-5]
    assert close(learn.recorder.lrs[:3], ref_last, rel=1e-3) and math.isclose(learn.recorder.lrs[-1], 3.981e-2, rel_tol=1e-3)
    starts, ends = np.array([1e-7, 1e-6, 1e-5]), np.array([1e-3, 1e-2, 1e-1])
    for i, row in enumerate(rows.rows):
        assert close(row, list(starts * (ends / starts) ** (i / 10)), rel=1e-12)
    with pytest.raises(ValueError, match='end_lr'):
        quiet(learn.lr_find, [1e-7, 1e-6, 1e-2], [1e-3, 1e-2, 1e-3])


def test_lr_find_recorder_survives_later_fit():
    learn = make_learner(5)
    quiet(learn.lr_find, num_it=10)
    rec = learn.lr_find_recorder
    quiet(learn.fit_one_cycle, 1, 1e-2)
    assert learn.lr_find_recorder is rec and learn.recorder is not rec and len(rec.lrs) == 10


def test_lr_finder_callback_alone():
    learn = trained_learner()
    before = snapshot(learn)
    finder = LRFinder(learn, 1e-5, 1e-1, num_it=6, stop_div=False)
    quiet(learn.fit, 3, 1e-5, callbacks=[finder])
    assert len(learn.recorder.lrs) == 6 and learn.lr_finder is finder
    assert snapshot(learn)[0].keys() == before[0].keys()
    assert all(torch.equal(before[0][k], v) for k, v in learn.model.state_dict().items())


def test_lr_find_stop_goes_through_broadcast(monkeypatch):
    calls = []
    def rank0_says_stop(value):
        calls.append(value)
        return len(calls) >= 3                                                   # rank 0 decided to stop at batch 2
    monkeypatch.setattr(lr_finder_mod, 'broadcast_from_rank0', rank0_says_stop)
    monkeypatch.setattr(lr_finder_mod, 'distrib_running', lambda: True)     # a process of a 2-process run
    monkeypatch.setattr(lr_finder_mod, 'num_distrib', lambda: 2)
    learn = make_learner(10)
    quiet(learn.lr_find)
    assert calls == [False, False, False] and len(learn.recorder.lrs) == 3 and learn.lr_finder.stop == 2


def test_alr_find_same_as_lr_find():
    a, b = make_learner(6), make_learner(6)
    quiet(a.lr_find, num_it=15)
    quiet(asyncio.run, b.alr_find(num_it=15))
    assert a.recorder.lrs == b.recorder.lrs and a.recorder.losses == b.recorder.losses
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


LR_FIND_BAD = [(dict(start_lr=0), 'start_lr'), (dict(start_lr=-1e-7), 'start_lr'), (dict(end_lr=0), 'end_lr'),
               (dict(start_lr=None), 'start_lr'), (dict(end_lr=float('inf')), 'end_lr'),
               (dict(start_lr=1e-3, end_lr=1e-3), 'end_lr'), (dict(start_lr=1, end_lr=1e-3), 'end_lr'),
               (dict(num_it=1), 'num_it'), (dict(num_it=0), 'num_it'), (dict(num_it=2.5), 'num_it'),
               (dict(wd=-1), 'wd')]


@pytest.mark.parametrize('kwargs,name', LR_FIND_BAD)
def test_lr_find_bad_input(kwargs, name):
    learn = trained_learner(n_batches=3)
    before = snapshot(learn)
    with pytest.raises(ValueError, match=name):
        quiet(learn.lr_find, **kwargs)
    assert_same(before, learn)


# ------------------------------------------------------------------------------------------------ suggestions (§3, §4)
V1_TRACE = [3 - 0.02 * i if i < 70 else 1.6 + 0.3 * (i - 70) for i in range(100)]


def test_suggestions_v1_reference():
    learn = make_learner(10, loss_func=ScriptedLoss(V1_TRACE))
    quiet(learn.lr_find, stop_div=False)
    rec = learn.lr_find_recorder
    s = rec.suggestions()
    assert set(s) == {'min_grad', 'valley', 'steep', 'min_loss', 'descent'} and all(type(v) is float for v in s.values())
    assert math.isclose(s['min_grad'], 0.03311311214825908, rel_tol=1e-9) and s['min_grad'] == rec.lrs[69]
    assert s['min_loss'] == rec.lrs[71] / 10
    assert s == lr_suggestions(rec.lrs, rec.losses)
    out = io.StringIO()
    with contextlib.redirect_stdout(out): rec.plot(suggestion=True, return_fig=True)
    assert rec.min_grad_lr == s['min_grad']
    assert 'Min numerical gradient: 3.31E-02' in out.getvalue() and 'Min loss divided by 10: 4.79E-03' in out.getvalue()


def test_suggestions_too_few_points():
    "V1 §3: with the default skips, 16 recorded points are too few and 17 work."
    lrs = [1e-7 * 1e8 ** (i / 100) for i in range(17)]
    losses = [3 - 0.01 * i for i in range(17)]
    assert lr_suggestions(lrs, losses)['min_grad'] in lrs
    with pytest.raises(ValueError, match='too few points'): lr_suggestions(lrs[:16], losses[:16])
    with pytest.raises(ValueError, match='too few points'): lr_suggestions([], [])
    with pytest.raises(ValueError, match='same length'): lr_suggestions(lrs, losses[:5])
    with pytest.raises(ValueError, match='skip_start'): lr_suggestions(lrs, losses, skip_start=-1)
    learn = make_learner(4)
    quiet(learn.lr_find, num_it=16, stop_div=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out): fig = learn.recorder.plot(suggestion=True, return_fig=True)
    assert fig is None and 'Failed to compute the gradients' in out.getvalue()
    with pytest.raises(ValueError, match='too few points'): learn.recorder.suggestions()


def test_valley_and_steep_rules():
    n = 60
    lrs = [1e-6 * 1e6 ** (i / n) for i in range(n)]
    # a strictly decreasing trace: the longest decreasing run ends at n-1 with length n, so v2's rule gives
    # start = (n-1) - n = -1 and idx = start + int(n/3) + int(n/3/2)
    s = lr_suggestions(lrs, [5 - 0.05 * i for i in range(n)], 0, 0)
    assert s['valley'] == lrs[-1 + int(n / 3) + int(n / 3 / 2)]
    # a V: down for 31 points (0..30) then up: idx = -1 + int(31/3) + int(31/6)
    v = [5 - 0.1 * i if i <= 30 else 2 + 0.1 * (i - 30) for i in range(n)]
    s = lr_suggestions(lrs, v, 0, 0)
    assert s['valley'] == lrs[-1 + int(31 / 3) + int(31 / 6)] and s['min_loss'] == lrs[30] / 10
    # steep: the steepest forward slope against log(lr), which on uneven spacing is not the biggest drop
    s = lr_suggestions([1e-3, 1e-2, 1.1e-2, 1e-1], [4., 3., 2.9, 1.], 0, 0)
    assert s['steep'] == 1e-2
    assert s['valley'] == 1e-3                        # 4 decreasing points: idx = -1 + int(4/3) + int(4/6) = 0


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_suggestions_robust_to_non_finite(bad):
    lrs = [1e-7 * 1e8 ** (i / 100) for i in range(100)]
    clean = [3 - 0.02 * i for i in range(60)]
    s = lr_suggestions(lrs, clean + [bad] * 40)
    assert s == lr_suggestions(lrs[:60 + 5], clean + [0.] * 5)                  # the same as the trace cut there
    assert all(math.isfinite(v) for v in s.values())
    s = lr_suggestions(lrs, clean[:40] + [bad] + clean[41:] + [1.] * 40)        # one bad point in the middle
    assert all(math.isfinite(v) and lrs[10] / 10 <= v <= lrs[39] for v in s.values())
    with pytest.raises(ValueError, match='too few points'):
        lr_suggestions(lrs, clean[:10] + [bad] + clean[11:] + [1.] * 40)


def test_suggestions_after_nan_run():
    learn = make_learner(10, loss_func=ScriptedLoss([3 - 0.02 * i for i in range(50)] + [float('nan')] * 50))
    quiet(learn.lr_find, stop_div=False)
    s = learn.recorder.suggestions()
    assert all(math.isfinite(v) for v in s.values())
    assert learn.recorder.lrs[10] / 10 <= min(s.values()) and max(s.values()) <= learn.recorder.lrs[49]


def test_empty_train_dl_and_preview_without_loss():
    empty = Learner(DataBunch([], None, device='cpu'), nn.Linear(8, 2), loss_func=CrossEntropyFlat())
    for call in (lambda: empty.fit_one_cycle(1, 1e-2), lambda: empty.lr_find(), lambda: empty.fit_fc(1, 1e-2),
                 lambda: one_cycle_schedule(empty, 1, 1e-2)):
        with pytest.raises(ValueError, match='train'): quiet(call)
    learn = make_learner(6)
    learn.loss_func = None                                       # a preview needs only the number of batches
    lrs, moms = one_cycle_schedule(learn, 2, 1e-2)
    assert len(lrs) == len(moms) == 12

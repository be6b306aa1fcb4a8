"""BackupAndRestore: a run interrupted anywhere and started again ends exactly as the run that never was.

Each check trains a reference run without interruption, then the same call on an identical learner, interrupted
(a KeyboardInterrupt raised by a callback mid-batch, a real SIGINT, a SIGKILL of the whole process, the panel's Stop
button) and started again until it ends, and compares the final weights, optimizer state, Recorder lists and CSV rows
with `torch.equal` and list equality.
"""
import contextlib, functools, io, os, random, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

from fastcb_nb.callback import Callback
from fastcb_nb.learner import Learner, DataBunch, CrossEntropyFlat, accuracy
from fastcb_nb.callbacks import CSVLogger, AccumulateScheduler
from fastcb_nb.tracker import EarlyStoppingCallback, ReduceLROnPlateauCallback, SaveModelCallback
from fastcb_nb.fp16 import MixedPrecision
from fastcb_nb.backup import BackupAndRestore
from fastcb_nb.testing import RaiseAt, quiet
from fastcb_nb import schedule  # noqa: F401  (fit_one_cycle, fit_fc)

N_TRAIN, BS = 96, 16          # 6 shuffled training batches an epoch
EPOCHS = 4


def make_data(seed=0, loader_generator=True):
    "Shuffled training batches: ordered by the loader's own generator, or (`loader_generator=False`) by torch's global one."
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 3, generator=g)
    x = torch.randn(N_TRAIN + 40, 8, generator=g)
    y = (x @ w + 0.5 * torch.randn(N_TRAIN + 40, 3, generator=g)).argmax(1)
    train, valid = TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), TensorDataset(x[N_TRAIN:], y[N_TRAIN:])
    order = torch.Generator().manual_seed(seed + 1) if loader_generator else None
    return DataBunch(DataLoader(train, batch_size=BS, shuffle=True, generator=order),
                     DataLoader(valid, batch_size=BS), device='cpu')


def make_learner(path, callbacks=('es', 'plateau', 'csv'), every='epoch', loader_generator=True, seed=0):
    "A seeded learner with dropout (torch's global generator at every batch) and the run's callbacks as callback_fns."
    torch.manual_seed(seed); random.seed(seed); np.random.seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
    fns = {'es': functools.partial(EarlyStoppingCallback, patience=5, min_delta=0.05),  # counts, never stops
           'stop': functools.partial(EarlyStoppingCallback, patience=0, min_delta=10.),  # stops after epoch 1
           'plateau': functools.partial(ReduceLROnPlateauCallback, patience=0, min_delta=1e-3, factor=0.5),
           'csv': CSVLogger, 'save': functools.partial(SaveModelCallback, every='improvement', name='best'),
           'bf16': functools.partial(MixedPrecision, dtype=torch.bfloat16),
           'acc': functools.partial(AccumulateScheduler, n_step=2)}
    cb_fns = [fns[c] for c in callbacks] + [functools.partial(BackupAndRestore, every=every)]
    return Learner(make_data(seed, loader_generator), model, loss_func=CrossEntropyFlat(), metrics=[accuracy],
                   path=path, callback_fns=cb_fns, silent=True)


CALLS = {'fit': lambda learn, cbs: learn.fit(EPOCHS, 1e-2, callbacks=cbs),
         'fit_one_cycle': lambda learn, cbs: learn.fit_one_cycle(EPOCHS, 2e-2, callbacks=cbs),
         'fit_fc': lambda learn, cbs: learn.fit_fc(EPOCHS, 1e-2, callbacks=cbs)}


def result(learn):
    "What must come out the same: weights, optimizer state and hyper-parameters, the Recorder's lists, the CSV file."
    opt = learn.opt.opt.state_dict()
    rec = learn.recorder
    csv = Path(learn.path) / 'history.csv'
    return {'model': {k: v.clone() for k, v in learn.model.state_dict().items()},
            'opt': {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for i, s in opt['state'].items()},
            'groups': [{k: v for k, v in g.items() if k != 'params'} for g in opt['param_groups']],
            'losses': list(rec.losses), 'lrs': list(rec.lrs), 'moms': list(rec.moms),
            'val_losses': list(rec.val_losses), 'metrics': [list(m) for m in rec.metrics],
            'nb_batches': list(rec.nb_batches), 'csv': csv.read_text().splitlines()[1:] if csv.exists() else None}


def assert_same(a, b):
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), f'weights {k} differ'
    assert a['opt'].keys() == b['opt'].keys()
    for i in a['opt']:
        for k, v in a['opt'][i].items():
            assert (torch.equal(v, b['opt'][i][k]) if torch.is_tensor(v) else v == b['opt'][i][k]), f'opt state {i}.{k}'
    for k in ('groups', 'losses', 'lrs', 'moms', 'val_losses', 'metrics', 'nb_batches'):
        assert a[k] == b[k], f'recorder {k} differs'
    # the CSV rows without the time column
    strip = lambda rows: None if rows is None else [r.rsplit(',', 1)[0] for r in rows]
    assert strip(a['csv']) == strip(b['csv']), 'CSV rows differ'


def reference_run(tmp_path, call='fit', **kw):
    learn = make_learner(tmp_path / 'ref', **kw)
    CALLS[call](learn, None)
    assert not (tmp_path / 'ref' / 'models' / 'backup.pth').exists()
    return result(learn)


class TrainedIterations(Callback):
    "The training iterations whose batch reached the optimizer step."
    def __init__(self): self.seen = []
    def on_step_end(self, iteration, **kwargs): self.seen.append(iteration)


def run_until_done(learn, call, interrupt, max_tries=10):
    "Run `call` with `interrupt` (a list of callbacks, or None) until it returns; the trained iterations of each try."
    tries = []
    for _ in range(max_tries):
        seen = TrainedIterations()
        cbs = [seen] + list(interrupt() if interrupt is not None else [])
        try:
            with quiet(): CALLS[call](learn, cbs)
            tries.append(seen.seen)
            return tries
        except KeyboardInterrupt:
            tries.append(seen.seen)
    raise AssertionError(f'not done after {max_tries} tries')


def once(factory):
    "An interrupt that strikes on the first try only."
    fired = []
    def make():
        if fired: return []
        fired.append(1)
        return factory()
    return make


# -- a KeyboardInterrupt raised by code mid-batch: resumes from the last backup ------------------------------------

@pytest.mark.parametrize('call', list(CALLS))
@pytest.mark.parametrize('every,at', [('epoch', 3), ('epoch', 15), (4, 9), (4, 19)])
def test_keyboard_interrupt_mid_batch_then_the_same_call(tmp_path, call, every, at):
    ref = reference_run(tmp_path, call, every=every)
    learn = make_learner(tmp_path / 'run', every=every)
    hit = once(lambda: [RaiseAt(at, KeyboardInterrupt(), 'on_backward_end')])
    tries = run_until_done(learn, call, hit)
    assert len(tries) == 2 and tries[0][-1] == at - 1
    n = 6 if every == 'epoch' else every
    # the second try starts at the last backup before the interruption: at an epoch's start, or every 4 batches
    assert tries[1][0] == (at // n) * n
    assert_same(result(learn), ref)
    assert not (tmp_path / 'run' / 'models' / 'backup.pth').exists()


# -- the callbacks that carry state, each way of shuffling, mixed precision and accumulation -----------------------

@pytest.mark.parametrize('callbacks,loader_generator', [
    (('es', 'plateau', 'csv', 'save'), True),
    (('es', 'plateau', 'csv'), False),            # the order drawn from torch's global generator
    (('bf16', 'csv'), True),
    (('acc', 'plateau', 'csv'), True),
    (('stop', 'csv'), True),                       # early stopping ends the run after its second epoch
])
@pytest.mark.parametrize('call', ['fit', 'fit_one_cycle'])
def test_every_built_in_callback_carries_its_state(tmp_path, call, callbacks, loader_generator):
    kw = dict(callbacks=callbacks, every=3, loader_generator=loader_generator)
    ref = reference_run(tmp_path, call, **kw)
    learn = make_learner(tmp_path / 'run', **kw)
    at = 9 if 'stop' not in callbacks else 7
    tries = run_until_done(learn, call, once(lambda: [RaiseAt(at, KeyboardInterrupt(), 'on_backward_end')]))
    assert len(tries) == 2
    if 'acc' in callbacks: assert tries[1][0] % 2 == 0    # steps after odd iterations: resumed after a whole step
    else: assert tries[1][0] % 3 == 0
    assert_same(result(learn), ref)


def test_interrupted_twice_and_other_exceptions(tmp_path):
    ref = reference_run(tmp_path, 'fit_one_cycle', every=3)
    learn = make_learner(tmp_path / 'run', every=3)
    plan = [[RaiseAt(4, KeyboardInterrupt(), 'on_backward_end')], [RaiseAt(13, RuntimeError('CUDA out of memory'),
                                                                           'on_loss_begin')], []]
    for cbs in plan:
        try:
            with quiet(): learn.fit_one_cycle(EPOCHS, 2e-2, callbacks=cbs)
        except (KeyboardInterrupt, RuntimeError): pass
    assert_same(result(learn), ref)


# -- a real Ctrl-C: held to the end of the batch, the backup written there, resumed at the next batch --------------

class SendSigint(Callback):
    def __init__(self, at, times=1): self.at, self.times = at, times
    def on_backward_end(self, iteration, train, **kwargs):
        if train and iteration == self.at:
            for _ in range(self.times): os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize('call', list(CALLS))
def test_real_ctrl_c_resumes_at_the_next_batch(tmp_path, call):
    ref = reference_run(tmp_path, call)
    learn = make_learner(tmp_path / 'run')
    tries = run_until_done(learn, call, once(lambda: [SendSigint(8)]))
    assert len(tries) == 2 and tries[0][-1] == 8 and tries[1][0] == 9     # the batch in progress finished, not repeated
    assert_same(result(learn), ref)


def test_the_interrupt_message_and_the_table_say_where(tmp_path):
    learn = make_learner(tmp_path / 'run')
    learn.silent = False
    with quiet() as out, pytest.raises(KeyboardInterrupt, match='epoch 1, batch 3'):
        learn.fit(EPOCHS, 1e-2, callbacks=[SendSigint(8)])
    assert 'continue from epoch 1, batch 3' in out.getvalue()
    with quiet() as out: learn.fit(EPOCHS, 1e-2)
    assert 'Resumed at epoch 1, batch 3' in out.getvalue()


def test_a_second_ctrl_c_stops_at_once_and_the_last_backup_stays(tmp_path):
    ref = reference_run(tmp_path, 'fit', every=4)
    learn = make_learner(tmp_path / 'run', every=4)
    tries = run_until_done(learn, 'fit', once(lambda: [SendSigint(10, times=2)]))
    assert tries[0][-1] == 9 and tries[1][0] == 8       # stopped in batch 10 at once: resumed from the backup at 8
    assert_same(result(learn), ref)


# -- the backup file, other calls, and what never writes one --------------------------------------------------------

def test_the_file_is_plain_data_and_holds_the_run(tmp_path):
    learn = make_learner(tmp_path / 'run', every=4)
    with quiet(), pytest.raises(KeyboardInterrupt): learn.fit(EPOCHS, 1e-2, callbacks=[SendSigint(9)])
    saved = torch.load(tmp_path / 'run' / 'models' / 'backup.pth', weights_only=True)
    assert saved['position'] == [1, 4, 10] and saved['call']['method'] == 'fit'
    assert dict(saved['call']['arguments'])['epochs'] == EPOCHS
    names = [n for n, _ in saved['processes'][0]['callbacks']]
    for n in ('Recorder', 'EarlyStoppingCallback', 'ReduceLROnPlateauCallback', 'CSVLogger'): assert n in names
    for k, v in learn.model.state_dict().items(): assert torch.equal(saved['model'][k], v)
    assert {'python', 'numpy', 'torch', 'cuda', 'loader'} <= set(saved['processes'][0]['rng'])
    assert saved['processes'][0]['epoch_rng'] is not None


def test_a_different_call_raises_and_changes_nothing(tmp_path):
    learn = make_learner(tmp_path / 'run', every=4)
    with quiet(), pytest.raises(KeyboardInterrupt): learn.fit(EPOCHS, 1e-2, callbacks=[SendSigint(9)])
    before = result(learn)
    backup = (tmp_path / 'run' / 'models' / 'backup.pth').read_bytes()
    for other, what in [(lambda: learn.fit(EPOCHS + 1, 1e-2), 'epochs'), (lambda: learn.fit(EPOCHS, 3e-2), 'lr'),
                        (lambda: learn.fit_one_cycle(EPOCHS, 1e-2), 'the method')]:
        with quiet(), pytest.raises(ValueError, match=what): other()
        after = result(learn)            # (a fit makes a new Recorder from the start, as in v1: only the weights count)
        assert all(torch.equal(v, after['model'][k]) for k, v in before['model'].items())
        assert all(torch.equal(v, after['opt'][i][k]) for i in before['opt'] for k, v in before['opt'][i].items())
        assert (tmp_path / 'run' / 'models' / 'backup.pth').read_bytes() == backup
    ref = reference_run(tmp_path, 'fit', every=4)
    with quiet(): learn.fit(EPOCHS, 1e-2)
    assert_same(result(learn), ref)


def test_a_file_that_is_not_a_backup_is_refused(tmp_path):
    learn = make_learner(tmp_path / 'run')
    (tmp_path / 'run' / 'models').mkdir(parents=True)
    (tmp_path / 'run' / 'models' / 'backup.pth').write_bytes(b'not a backup')
    w = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with quiet(), pytest.raises(ValueError, match='could not be read as a backup'): learn.fit(1, 1e-2)
    assert all(torch.equal(w[k], v) for k, v in learn.model.state_dict().items())


def test_delete_on_success_false_keeps_the_end_and_a_rerun_trains_nothing(tmp_path):
    learn = make_learner(tmp_path / 'run', callbacks=('csv',))
    learn.callback_fns[-1] = functools.partial(BackupAndRestore, delete_on_success=False)
    with quiet(): learn.fit(2, 1e-2)
    assert (tmp_path / 'run' / 'models' / 'backup.pth').exists()
    done = result(learn)
    seen = TrainedIterations()
    with quiet(): learn.fit(2, 1e-2, callbacks=[seen])
    assert seen.seen == []
    assert_same(result(learn), done)


def test_lr_find_and_validate_never_write_a_backup(tmp_path):
    learn = make_learner(tmp_path / 'run', every=1)
    with quiet():
        learn.lr_find(num_it=20)
        learn.validate()
    assert not (tmp_path / 'run' / 'models').exists() or not (tmp_path / 'run' / 'models' / 'backup.pth').exists()


# -- a process killed at a random moment -----------------------------------------------------------------------------

CHILD = textwrap.dedent('''
    import sys, time, functools, torch
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from test_backup import make_learner, result, TrainedIterations
    from fastcb_nb.callback import Callback
    out, every = sys.argv[1], int(sys.argv[2])
    class Log(Callback):
        def __init__(self): self.f = open(out + '/iterations.log', 'a')
        def on_step_end(self, iteration, **kwargs):
            time.sleep(0.01)                                  # long enough to be killed in the middle
            self.f.write(f'{{iteration}}\\n'); self.f.flush()
    learn = make_learner(out + '/run', callbacks=('es', 'plateau', 'csv'), every=every)
    learn.fit_one_cycle(12, 2e-2, callbacks=[Log()])
    torch.save(result(learn), out + '/result.pt')
''')


def run_child(out: Path, every: int, kill_after=None):
    script = out / 'child.py'
    script.write_text(CHILD.format(root=str(ROOT), tests=str(ROOT / 'tests')))
    log = out / 'iterations.log'
    p = subprocess.Popen([sys.executable, str(script), str(out), str(every)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    if kill_after is None:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        return True
    start = len(log.read_text().splitlines()) if log.exists() else 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:     # wait until it trains, then kill it a while later
        if log.exists() and len(log.read_text().splitlines()) > start: break
        time.sleep(0.01)
    time.sleep(kill_after)
    if p.poll() is not None: return p.returncode == 0
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    return False


@pytest.mark.parametrize('every', [5])
def test_sigkill_at_random_moments_repeats_at_most_every_batches(tmp_path, every):
    (tmp_path / 'ref').mkdir(); (tmp_path / 'kill').mkdir()
    run_child(tmp_path / 'ref', every)
    ref = torch.load(tmp_path / 'ref' / 'result.pt', weights_only=False)
    rng = random.Random(3)
    kills, done = 0, False
    while not done:
        done = run_child(tmp_path / 'kill', every, kill_after=None if kills >= 3 else rng.uniform(0.02, 0.15))
        kills += not done
    assert kills == 3
    assert_same(torch.load(tmp_path / 'kill' / 'result.pt', weights_only=False), ref)
    logged = [int(l) for l in (tmp_path / 'kill' / 'iterations.log').read_text().split()]
    # each restart goes back at most `every` batches: the iterations trained twice after each kill
    repeats, last = [], -1
    for it in logged:
        if it <= last: repeats.append(last - it + 1)
        last = it
    assert len(repeats) <= kills and all(r <= every for r in repeats), repeats
    assert sorted(set(logged)) == list(range(max(logged) + 1))


# -- the Stop button of the live panel ------------------------------------------------------------------------------

def test_the_stop_button_keeps_a_backup_and_the_run_continues(tmp_path):
    pytest.importorskip('ipywidgets')
    from fastcb_nb.panel import ShowGraph
    ref = reference_run(tmp_path, 'fit', callbacks=('csv',))
    learn = make_learner(tmp_path / 'run', callbacks=('csv',))
    learn.callback_fns.append(functools.partial(ShowGraph, live=True))
    class PressStop(Callback):
        _order = -10                                  # before the panel's own batch end: it stops after this batch
        def on_batch_end(self, iteration, train, **kwargs):
            if train and iteration == 10: learn.show_graph.panel.stop_button.click()
    with quiet(): learn.fit(EPOCHS, 1e-2, callbacks=[PressStop()])      # stops after batch 10, nothing raised
    assert learn.show_graph.stopped_by_button and learn.recorder.nb_batches == [6, 5]
    assert (tmp_path / 'run' / 'models' / 'backup.pth').exists()
    seen, status = TrainedIterations(), []
    class Status(Callback):
        def on_epoch_end(self, **kwargs): status.append(learn.show_graph.panel.status.value)
    with quiet(): learn.fit(EPOCHS, 1e-2, callbacks=[seen, Status()])
    assert seen.seen[0] == 11 and 'Resumed at epoch 1, batch 5' in status[0]
    assert_same(result(learn), ref)


# -- two gloo processes ----------------------------------------------------------------------------------------------

def fn_distributed(out, interrupt_at):
    "Per rank: a data-parallel fit_one_cycle with a BackupAndRestore every 2 batches, interrupted at `interrupt_at`."
    from fastcb_nb.core import rank_distrib
    out = Path(out)
    learn = make_learner(out / 'run', callbacks=('plateau', 'csv'), every=2).to_distributed()
    for cbs in ([RaiseAt(interrupt_at, KeyboardInterrupt(), 'on_backward_end')] if interrupt_at is not None else [], []):
        try:
            with quiet(): learn.fit_one_cycle(EPOCHS, 2e-2, callbacks=cbs)
            break
        except KeyboardInterrupt: pass
    r = result(learn)
    r['rank'] = rank_distrib()
    return r


def test_data_parallel_run_resumes_exactly(tmp_path):
    from fastcb_nb.distributed import launch
    ref = launch(fn_distributed, nprocs=2, args=(str(tmp_path / 'ref'), None), timeout=180, pg_timeout=60,
                 start_method='fork')
    res = launch(fn_distributed, nprocs=2, args=(str(tmp_path / 'int'), 7), timeout=180, pg_timeout=60,
                 start_method='fork')
    for a, b in zip(ref, res):
        assert a['rank'] == b['rank']
        assert_same(a, b)
    for k in ref[0]['model']: assert torch.equal(res[0]['model'][k], res[1]['model'][k])


@pytest.mark.parametrize('call', ['afit', 'afit_one_cycle', 'afit_fc'])
def test_the_awaitable_twins_resume_too(tmp_path, call):
    import asyncio
    sync = call[1:]
    ref = reference_run(tmp_path, sync, every=4)
    learn = make_learner(tmp_path / 'run', every=4)
    lr = 2e-2 if sync == 'fit_one_cycle' else 1e-2
    async def go(cbs): return await getattr(learn, call)(EPOCHS, lr, callbacks=cbs)
    with quiet(), pytest.raises(KeyboardInterrupt): asyncio.run(go([SendSigint(13)]))
    seen = TrainedIterations()
    with quiet(): asyncio.run(go([seen]))
    assert seen.seen[0] == 14
    assert_same(result(learn), ref)


def test_a_backup_that_cannot_be_written_warns_and_training_goes_on(tmp_path):
    ref = reference_run(tmp_path, 'fit', every=4)
    learn = make_learner(tmp_path / 'run', every=4)
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'models').write_text('a file where the models folder should be')
    with quiet(), pytest.warns(UserWarning, match='could not write .*training goes on'): learn.fit(EPOCHS, 1e-2)
    assert_same(result(learn), ref)


@pytest.mark.parametrize('panel_first,panel_then', [(False, True), (True, False)])
def test_the_live_panel_may_join_or_leave_a_resumed_run(tmp_path, panel_first, panel_then):
    pytest.importorskip('ipywidgets')
    from fastcb_nb.panel import ShowGraph
    ref = reference_run(tmp_path, 'fit_one_cycle', every=4)
    learn = make_learner(tmp_path / 'run', every=4)
    panel = lambda on: [ShowGraph(learn, live=True)] if on else []
    with quiet(), pytest.raises(KeyboardInterrupt):
        learn.fit_one_cycle(EPOCHS, 2e-2, callbacks=panel(panel_first) + [SendSigint(13)])
    seen = TrainedIterations()
    with quiet(): learn.fit_one_cycle(EPOCHS, 2e-2, callbacks=panel(panel_then) + [seen])
    assert seen.seen[0] == 14
    assert_same(result(learn), ref)

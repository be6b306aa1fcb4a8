"""Promises that hold under interruption, concurrency, bad files and bad input (issue 10): real signals and killed
processes included, every case bounded in time."""
import asyncio, io, math, os, pickle, random, signal, subprocess, sys, textwrap, threading, time, zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fastcb_nb.core import ArgumentError, defaults
from fastcb_nb.callback import Callback
from fastcb_nb.learner import Learner, load_learner, CrossEntropyFlat, DataBunch, synthetic_data
from fastcb_nb.callbacks import GradientClipping, MixedPrecision, AccumulateScheduler, TerminateOnNaNCallback
from fastcb_nb.preview import OneCyclePreview
from fastcb_nb.testing import tiny_learner, tiny_model, quiet, RaiseAt

ROOT = Path(__file__).resolve().parent.parent


def snapshot(learn):
    "Weights and buffers, optimizer state and hyper-parameters, the Recorder, the train/eval modes."
    model = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt = None
    if learn.opt is not None:
        sd = learn.opt.opt.state_dict()
        opt = ({i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()} for i, s in sd['state'].items()},
               [dict(g) for g in sd['param_groups']], learn.opt.hypers())
    return model, opt, learn.__dict__.get('recorder'), [m.training for m in learn.model.modules()]


def same(a, b) -> bool:
    (ma, oa, ra, ta), (mb, ob, rb, tb) = a, b
    if ma.keys() != mb.keys() or not all(torch.equal(ma[k], mb[k]) for k in ma): return False
    if (oa is None) != (ob is None) or ra is not rb or ta != tb: return False
    if oa is None: return True
    (sa, ga, ha), (sb, gb, hb) = oa, ob
    tensors_equal = all(sa[i].keys() == sb[i].keys() and all(
        torch.equal(sa[i][k], sb[i][k]) if torch.is_tensor(sa[i][k]) else sa[i][k] == sb[i][k] for k in sa[i]) for i in sa)
    return sa.keys() == sb.keys() and tensors_equal and ga == gb and ha == hb


def trained(**kwargs):
    learn = tiny_learner(silent=True, **kwargs)
    with quiet(): learn.fit(1, 1e-2)                    # the optimizer has state, there is a Recorder
    return learn


# ------------------------------------------------------------------------------------------------ lr_find restore
class EndFails(Callback):
    "Raise `exc` in on_train_end, before (order -20) or after (order 20) the LRFinder."
    def __init__(self, exc, order): self.exc, self._order = exc, order
    def on_train_end(self, **kwargs): raise self.exc

class SeesEnd(Callback):
    _order = 50
    def __init__(self): self.ends = 0
    def on_train_end(self, **kwargs): self.ends += 1


@pytest.mark.parametrize('exc', [RuntimeError('end'), KeyboardInterrupt()])
@pytest.mark.parametrize('order', [-20, 20])
def test_lr_find_restores_whatever_another_callback_raises_at_the_end(exc, order):
    learn = trained()
    learn.model.eval()                                  # the mode must come back too
    before, late = snapshot(learn), SeesEnd()
    learn.callbacks += [EndFails(exc, order), late]
    with quiet(), pytest.raises(type(exc)): learn.lr_find(num_it=12)
    learn.callbacks = []
    after = snapshot(learn)
    assert same((before[0], before[1], None, before[3]), (after[0], after[1], None, after[3]))
    assert late.ends == 1


def test_a_second_ctrl_c_during_the_restore_waits_for_it(monkeypatch):
    "A real SIGINT sent in the middle of the restore (between loading the weights and the optimizer state)."
    learn = trained()
    before = snapshot(learn)
    real = torch.nn.Module.load_state_dict
    sent = []
    def load_and_interrupt(self, *a, **k):
        out = real(self, *a, **k)
        if not sent: sent.append(1); os.kill(os.getpid(), signal.SIGINT)      # arrives now, during the restore
        return out
    monkeypatch.setattr(torch.nn.Module, 'load_state_dict', load_and_interrupt)
    with quiet(), pytest.raises(KeyboardInterrupt): learn.lr_find(num_it=12)
    monkeypatch.setattr(torch.nn.Module, 'load_state_dict', real)
    after = snapshot(learn)
    assert sent and same((before[0], before[1], None, before[3]), (after[0], after[1], None, after[3]))


DOUBLE_CTRL_C = textwrap.dedent('''
    import os, random, signal, sys, threading, time
    import torch
    torch.set_num_threads(1)
    from fastcb_nb.testing import tiny_learner, quiet
    def snap(learn):
        sd = learn.opt.opt.state_dict()
        return ([p.detach().clone() for p in learn.model.state_dict().values()],
                {i: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for i, s in sd['state'].items()},
                [dict((k, v) for k, v in g.items() if k != 'params') for g in sd['param_groups']], learn.opt.hypers(),
                [m.training for m in learn.model.modules()])
    def equal(a, b):
        return (all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and a[1].keys() == b[1].keys()
                and all(torch.equal(a[1][i][k], b[1][i][k]) for i in a[1] for k in a[1][i]) and a[2:] == b[2:])
    rng = random.Random(int(sys.argv[1]))
    learn = tiny_learner(n_train=2048, bs=16, silent=True)
    with quiet(): learn.fit(1, 1e-3)
    bad, trials, interrupted = 0, int(sys.argv[2]), 0
    t0 = time.monotonic()
    with quiet(): learn.lr_find(num_it=100, stop_div=False)
    duration = time.monotonic() - t0
    for t in range(trials):
        before = snap(learn)
        first = rng.uniform(0.05, 0.9) * duration; second = first + rng.uniform(0.0, 0.004)
        timers = [threading.Timer(d, os.kill, (os.getpid(), signal.SIGINT)) for d in (first, second)]
        try:
            for tm in timers: tm.start()
            with quiet(): learn.lr_find(num_it=100, stop_div=False)
        except KeyboardInterrupt: interrupted += 1
        while any(tm.is_alive() for tm in timers) or False:
            try: time.sleep(0.01)
            except KeyboardInterrupt: pass
        try: time.sleep(0.05)                       # a late second Ctrl-C lands here, not in the next trial
        except KeyboardInterrupt: pass
        if not equal(before, snap(learn)): bad += 1
    print(f'RESULT trials={trials} interrupted={interrupted} bad={bad}')
''')


def test_double_ctrl_c_during_lr_find_never_leaves_a_half_restore(tmp_path):
    "Real SIGINTs, twice, at random moments of 24 lr_find runs (the second often lands in the restore)."
    script = tmp_path / 'double.py'
    script.write_text(DOUBLE_CTRL_C)
    r = subprocess.run([sys.executable, str(script), '7', '24'], capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path)
    line = [l for l in r.stdout.splitlines() if l.startswith('RESULT')]
    assert line, r.stdout[-2000:] + r.stderr[-3000:]
    result = dict(kv.split('=') for kv in line[0].split()[1:])
    assert int(result['bad']) == 0 and int(result['interrupted']) >= 12, line[0]


# ----------------------------------------------------------------------------------------------- one run at a time
def test_two_afits_at_once_refuse_the_second():
    learn = tiny_learner(n_train=4096, bs=16, silent=True)
    async def both():
        return await asyncio.gather(learn.afit(1, 1e-3), learn.afit(1, 5e-2), return_exceptions=True)
    with quiet(): first, second = asyncio.run(both())
    assert first is None and isinstance(second, RuntimeError) and 'already running fit(' in str(second)
    assert len(learn.recorder.lrs) == 256 and set(learn.recorder.lrs) == {1e-3}     # fit A ran alone, at its rate


@pytest.mark.parametrize('second', ['alr_find', 'afit_one_cycle', 'afit_fc', 'afit'])
def test_any_second_entry_point_is_refused_and_changes_nothing(second):
    learn = trained(n_train=32768, bs=16)                         # 2048 batches: the first run yields many times
    states = {}
    class Watch(Callback):
        def on_train_begin(self, **kwargs): states.setdefault('begin', snapshot(learn))
    async def both():
        first = asyncio.ensure_future(learn.afit(1, 1e-3, callbacks=[Watch()]))
        await asyncio.sleep(0.02)                                  # the first run is under way, suspended
        try: await getattr(learn, second)(1)
        except RuntimeError as e: states['error'] = str(e)
        await first
    with quiet(): asyncio.run(both())
    assert 'already running fit(' in states['error'] and len(learn.recorder.lrs) == 2048


def test_a_sync_fit_or_validate_while_an_afit_is_suspended_is_refused():
    learn = tiny_learner(n_train=32768, bs=16, silent=True)
    seen = {}
    async def main():
        task = asyncio.ensure_future(learn.afit(1, 1e-3))
        await asyncio.sleep(0.02)
        for name, call in (('fit', lambda: learn.fit(1, 1e-3)), ('lr_find', learn.lr_find), ('validate', learn.validate)):
            try: call(); seen[name] = 'ran'
            except RuntimeError as e: seen[name] = str(e)
        await task
    with quiet(): asyncio.run(main())
    assert all('cannot start: this Learner is already running fit(' in v for v in seen.values()), seen
    assert len(learn.recorder.lrs) == 2048


def test_validate_from_a_callback_of_the_running_fit_works():
    learn = tiny_learner(silent=True)
    got = []
    class Extra(Callback):
        def on_epoch_end(self, **kwargs): got.append(learn.validate())
    with quiet(): learn.fit(2, 1e-2, callbacks=[Extra()])
    assert len(got) == 2 and all(len(v) == 1 and math.isfinite(v[0]) for v in got)
    class Nested(Callback):
        def on_epoch_end(self, **kwargs): learn.fit(1)
    with quiet(), pytest.raises(RuntimeError, match='already running fit'): learn.fit(1, 1e-2, callbacks=[Nested()])
    with quiet(): learn.fit(1, 1e-2)                            # and the learner trains again afterwards


# --------------------------------------------------------------------------------------------------- bad files
def ckpt(tmp_path, **kwargs):
    learn = trained(path=tmp_path, **kwargs)
    return learn.save('ck', return_path=True)


@pytest.mark.parametrize('make', ['sgd', 'three_groups', 'other_arch', 'wider'])
def test_load_refuses_a_checkpoint_that_does_not_fit_and_changes_nothing(tmp_path, make):
    path = ckpt(tmp_path)
    if make == 'sgd': learn = trained(path=tmp_path, opt_func=torch.optim.SGD)
    elif make == 'three_groups':
        m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        learn = trained(path=tmp_path, model=m, layer_groups=[m[0], m[2]], bn_wd=False)
    elif make == 'other_arch': learn = trained(path=tmp_path, model=nn.Sequential(nn.Linear(8, 2)))
    else: learn = trained(path=tmp_path, hidden=32)
    before = snapshot(learn)
    with pytest.raises(ValueError, match='ck.pth does not fit this learner, nothing was loaded'): learn.load('ck')
    assert same(before, snapshot(learn))


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all', 'truncated', 'export', 'pickle'])
def test_load_of_a_broken_file_names_it(tmp_path, content):
    learn = trained(path=tmp_path)
    good = learn.save('good', return_path=True).read_bytes()
    target = tmp_path / 'models' / 'bad.pth'
    if content == 'truncated': content = good[:len(good) // 2]
    elif content == 'export': learn.export(target); content = target.read_bytes()
    elif content == 'pickle': content = pickle.dumps({'model': 3})
    target.write_bytes(content)
    before = snapshot(learn)
    with pytest.raises(ValueError, match='bad.pth'): learn.load('bad')
    assert same(before, snapshot(learn))


def test_checkpoints_and_exports_round_trip_through_bytesio():
    learn = trained()
    buf = io.BytesIO(); learn.save(buf); buf.seek(0)
    other = tiny_learner(silent=True, seed=3).load(buf)
    assert all(torch.equal(a, b) for a, b in zip(learn.model.parameters(), other.model.parameters()))
    buf = io.BytesIO(); learn.export(buf); buf.seek(0)
    back = load_learner(buf)
    assert all(torch.equal(a, b) for a, b in zip(learn.model.parameters(), back.model.parameters()))


class Evil:
    def __init__(self, cmd): self.cmd = cmd
    def __reduce__(self): return (os.system, (self.cmd,))

class EvilEval:
    def __init__(self, code): self.code = code
    def __reduce__(self): return (eval, (self.code,))


@pytest.mark.parametrize('payload', ['system', 'eval', 'nested', 'unknown_module'])
def test_load_learner_refuses_code_in_a_crafted_file(tmp_path, payload):
    marker = tmp_path / 'pwned'
    learn = trained(path=tmp_path)
    learn.export()
    state = torch.load(tmp_path / 'export.pkl', weights_only=False)
    if payload == 'system': state['loss_func'] = Evil(f'touch {marker}')
    elif payload == 'eval': state['metrics'] = [EvilEval(f"open({str(marker)!r}, 'w')")]
    elif payload == 'nested': state['cb_state'] = {GradientClipping: {'clip': Evil(f'touch {marker}')}}
    else: state['model'] = subprocess.Popen
    torch.save(state, tmp_path / 'export.pkl')
    with pytest.raises(ValueError, match='trusted=True'): load_learner(tmp_path)
    assert not marker.exists()


def test_load_learner_needs_trusted_for_a_users_model_class(tmp_path):
    learn = trained(path=tmp_path, model=MyModel())
    learn.export()
    with pytest.raises(ValueError, match='test_trust.MyModel'): load_learner(tmp_path)
    assert isinstance(load_learner(tmp_path, trusted=True).model, MyModel)

class MyModel(nn.Sequential):
    def __init__(self): super().__init__(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


KILLED_SAVE = textwrap.dedent('''
    import sys, torch
    from fastcb_nb.testing import tiny_learner
    learn = tiny_learner(path=sys.argv[1], model=torch.nn.Sequential(torch.nn.Linear(8, 2000), torch.nn.Linear(2000, 2000),
                         torch.nn.Linear(2000, 2)), silent=True)
    print('ready', flush=True)
    while True:
        learn.save('m'); learn.export()
''')


def test_a_killed_save_leaves_the_file_intact_and_the_next_save_cleans_up(tmp_path):
    script = tmp_path / 'saver.py'
    script.write_text(KILLED_SAVE)
    learn = tiny_learner(path=tmp_path, model=nn.Sequential(nn.Linear(8, 2000), nn.Linear(2000, 2000), nn.Linear(2000, 2)))
    good = learn.save('m', return_path=True).read_bytes()
    learn.export()
    rng, left = random.Random(3), 0
    for _ in range(6):
        p = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert p.stdout.readline().strip() == 'ready'
        time.sleep(rng.uniform(0.05, 0.6))
        p.kill(); p.wait(10)
        torch.load(tmp_path / 'models' / 'm.pth', weights_only=True)         # always a whole file
        load_learner(tmp_path)
        left += len(list((tmp_path / 'models').glob('.m.pth.*.tmp'))) + len(list(tmp_path.glob('.export.pkl.*.tmp')))
    learn.save('m'); learn.export()                                          # the next saves clean up
    assert list((tmp_path / 'models').glob('.*.tmp')) == [] and list(tmp_path.glob('.*.tmp')) == []
    assert (tmp_path / 'models' / 'm.pth').read_bytes() == good


# -------------------------------------------------------------------------------------------- half-built callbacks
@pytest.mark.parametrize('make,name', [(lambda l: MixedPrecision(l, loss_scale=-1), 'mixed_precision'),
                                       (lambda l: MixedPrecision(l, dtype='int8'), 'mixed_precision'),
                                       (lambda l: GradientClipping(l, clip=-1), 'gradient_clipping'),
                                       (lambda l: AccumulateScheduler(l, n_step=0), 'accumulate_scheduler')])
def test_a_refused_constructor_leaves_nothing_on_the_learner(make, name):
    learn = tiny_learner(silent=True)
    with pytest.raises(ArgumentError): make(learn)
    assert name not in learn.__dict__
    with quiet(): learn.fit(1, 1e-2)
    learn.clip_grad(0.5)
    with quiet(): learn.fit(1, 1e-2)


# ------------------------------------------------------------------------------------------------------ bad input
def bad_calls():
    "(description, function of a fresh learner that must raise an ArgumentError naming `word`, word)."
    d = synthetic_data(64, 32, bs=16, device='cpu')
    mk = lambda **kw: Learner(d, tiny_model(), loss_func=CrossEntropyFlat(), **kw)
    cases = [('fit wd=inf', lambda l: l.fit(1, 1e-3, wd=float('inf')), 'wd'),
             ('fit lr str', lambda l: l.fit(1, '1e-3'), 'lr'), ('fit lr bool', lambda l: l.fit(1, True), 'lr'),
             ('fit epochs float', lambda l: l.fit(1.5, 1e-3), 'epochs'), ('fit epochs str', lambda l: l.fit('2'), 'epochs'),
             ('fit reversed slice', lambda l: l.fit(1, slice(1e-2, 1e-4)), 'lr'),
             ('fit lr nan', lambda l: l.fit(1, float('nan')), 'lr'), ('fit lr list of 2', lambda l: l.fit(1, [1e-3, 1e-2]), 'lr'),
             ('fit callbacks class', lambda l: l.fit(1, 1e-3, callbacks=[TerminateOnNaNCallback]), 'callbacks'),
             ('fit callbacks int', lambda l: l.fit(1, 1e-3, callbacks=[3]), 'callbacks'),
             ('fit wd list', lambda l: l.fit(1, 1e-3, wd=[.1, .1]), 'wd'),
             ('lr_find start str', lambda l: l.lr_find(start_lr='1e-7'), 'start_lr'),
             ('lr_find stop_div str', lambda l: l.lr_find(stop_div='no'), 'stop_div'),
             ('lr_find num_it 1', lambda l: l.lr_find(num_it=1), 'num_it'),
             ('lr_find end < start', lambda l: l.lr_find(1e-2, 1e-3), 'end_lr'),
             ('one cycle max_lr str', lambda l: l.fit_one_cycle(1, '1e-3'), 'max_lr'),
             ('one cycle pct 1', lambda l: l.fit_one_cycle(1, 1e-3, pct_start=1), 'pct_start'),
             ('one cycle div 0', lambda l: l.fit_one_cycle(1, 1e-3, div_factor=0), 'div_factor'),
             ('one cycle div nan', lambda l: l.fit_one_cycle(1, 1e-3, div_factor=float('nan')), 'div_factor'),
             ('one cycle moms', lambda l: l.fit_one_cycle(1, 1e-3, moms=(0.9, 1.1)), 'moms'),
             ('fit_fc start_pct', lambda l: l.fit_fc(1, 1e-3, start_pct=2), 'start_pct'),
             ('freeze_to 5', lambda l: l.freeze_to(5), 'n'), ('save None', lambda l: l.save(None), 'name'),
             ('save empty', lambda l: l.save(''), 'name'), ('export None', lambda l: l.export(None), 'file'),
             ('clip_grad neg', lambda l: l.clip_grad(-1), 'clip'),
             ('preview div 0', lambda l: OneCyclePreview(l, div_factor=0), 'div_factor'),
             ('preview div nan', lambda l: OneCyclePreview(l, div_factor=float('nan')), 'div_factor'),
             ('preview pct out', lambda l: OneCyclePreview(l, pct_start=1.5), 'pct_start'),
             ('Learner data str', lambda l: Learner('not a databunch', tiny_model()), 'data'),
             ('Learner opt_func str', lambda l: mk(opt_func='adam'), 'opt_func'),
             ('Learner metrics int', lambda l: mk(metrics=[3]), 'metrics'),
             ('Learner callback_fns int', lambda l: mk(callback_fns=[3]), 'callback_fns'),
             ('Learner callbacks class', lambda l: mk(callbacks=[TerminateOnNaNCallback]), 'callbacks'),
             ('Learner layer_groups empty', lambda l: mk(layer_groups=[]), 'layer_groups'),
             ('Learner layer_groups foreign', lambda l: mk(layer_groups=[nn.Linear(2, 2)]), 'layer_groups'),
             ('Learner model_dir None', lambda l: mk(model_dir=None), 'model_dir'),
             ('Learner wd list', lambda l: mk(wd=[.1, .1]), 'wd'), ('Learner wd inf', lambda l: mk(wd=float('inf')), 'wd'),
             ('DataBunch str', lambda l: DataBunch('not a dl'), 'train_dl'),
             ('synthetic task', lambda l: synthetic_data(task='images'), 'task')]
    return cases


@pytest.mark.parametrize('desc,call,word', bad_calls(), ids=[c[0] for c in bad_calls()])
def test_bad_input_is_refused_before_anything_changes(desc, call, word):
    learn = trained()
    before = snapshot(learn)
    with quiet(), pytest.raises(ArgumentError) as e: call(learn)
    assert str(e.value).startswith(word + ' must be') or f'{word} must be' in str(e.value), str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError)
    assert same(before, snapshot(learn))


def test_a_one_group_slice_trains_at_the_upper_rate():
    learn = tiny_learner(silent=True)
    with quiet(): learn.fit(1, slice(1e-4, 1e-2))
    assert set(learn.recorder.lrs) == {1e-2}
    with quiet(): learn.fit_one_cycle(1, slice(1e-4, 1e-3))
    assert math.isclose(max(learn.recorder.lrs), 1e-3)


def test_a_batch_that_fails_in_the_loss_leaves_batchnorm_statistics_alone():
    model = tiny_model(bn=True)
    learn = tiny_learner(model=model, silent=True, loss_func=lambda out, y: nn.functional.mse_loss(out, y))  # wrong shapes
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with quiet(), pytest.raises(RuntimeError): learn.fit(1, 1e-2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------------------- endings
class StopAt(Callback):
    def __init__(self, n): self.n = n
    def on_batch_end(self, iteration, train, **kwargs):
        if train and iteration == self.n: return {'stop_epoch': True, 'stop_training': True}


@pytest.mark.parametrize('run', ['callback', 'one_cycle', 'lr_find', 'early_stop'])
def test_progress_bars_are_finished_on_every_ending(run):
    from fastcb_nb.tracker import EarlyStoppingCallback
    from fastcb_nb.testing import ScriptedLoss
    learn = tiny_learner(silent=True, loss_func=ScriptedLoss(valid=[1., 2., 3., 4.]) if run == 'early_stop' else CrossEntropyFlat())
    with quiet():
        if run == 'callback': learn.fit(3, 1e-3, callbacks=[StopAt(5)])
        elif run == 'one_cycle': learn.fit_one_cycle(3, 1e-3, tot_epochs=1)
        elif run == 'lr_find': learn.lr_find(num_it=6)
        else: learn.fit(4, 1e-3, callbacks=[EarlyStoppingCallback(learn)])
    bar = learn.recorder.pbar.main_bar
    assert bar.last_v is None and len(learn.recorder.nb_batches) < (4 if run == 'early_stop' else 3) + (run == 'lr_find')


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_terminate_on_nan_never_applies_the_bad_step(bad):
    class BadAt:
        def __init__(self): self.calls = 0
        def __call__(self, out, y):
            loss = nn.functional.cross_entropy(out, y)
            if torch.is_grad_enabled():
                self.calls += 1
                if self.calls == 3: return loss * bad
            return loss
    learn = tiny_learner(silent=True, loss_func=BadAt(), callbacks=[TerminateOnNaNCallback()])
    weights = []
    class Keep(Callback):
        def on_batch_begin(self, train, **kwargs):
            if train: weights.append([p.detach().clone() for p in learn.model.parameters()])
    with quiet(): learn.fit(2, 1e-2, callbacks=[Keep()])
    assert learn.recorder.nb_batches == [3]
    assert all(torch.equal(a, b) for a, b in zip(weights[2], learn.model.parameters()))


CTRL_C_FIT = textwrap.dedent('''
    import os, signal, sys, threading, torch
    torch.set_num_threads(1)
    from fastcb_nb.callback import Callback
    from fastcb_nb.testing import tiny_learner, quiet
    got = []
    class End(Callback):
        def on_train_begin(self, **kwargs): threading.Timer(float(sys.argv[1]), os.kill, (os.getpid(), signal.SIGINT)).start()
        def on_train_end(self, exception, **kwargs): got.append(type(exception).__name__)
    learn = tiny_learner(n_train=100000, bs=16, silent=True)
    try:
        with quiet(): learn.fit(3, 1e-3, callbacks=[End()])
    except KeyboardInterrupt: got.append('raised')
    rec = learn.recorder
    ok = len(rec.losses) == len(rec.lrs) == len(rec.moms) > 0 and all(isinstance(v, float) for v in rec.losses)
    print('RESULT', got, ok, rec.pbar.main_bar.last_v is None)
''')


def test_a_real_ctrl_c_during_fit_ends_cleanly(tmp_path):
    script = tmp_path / 'ctrlc.py'
    script.write_text(CTRL_C_FIT)
    for delay in ('0.3', '0.8'):
        r = subprocess.run([sys.executable, str(script), delay], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path)
        assert "RESULT ['KeyboardInterrupt', 'raised'] True True" in r.stdout, r.stdout + r.stderr[-2000:]

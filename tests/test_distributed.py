"""Data-parallel training on torch.distributed: real processes (gloo, 127.0.0.1), started by the tests.

The multi-process tests start 2 CPU processes, either with torchrun (through `launch(script)`, running this very file
as the script: see `main` at the bottom) or with `launch(function)` (spawn, and fork as from a notebook). Every
launch has a wall-clock timeout and every process group a collective timeout, so a broken build fails instead of
hanging. The whole file takes about half a minute on 2 cores.
"""
import contextlib, functools, io, sys, time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, IterableDataset

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

from fastcb_nb.core import rank_distrib, num_distrib
from fastcb_nb.callback import Callback
from fastcb_nb.learner import Learner, DataBunch, CrossEntropyFlat, accuracy
from fastcb_nb.core import distrib_running
from fastcb_nb.distributed import (launch, setup_distrib, cleanup_distrib, distrib_dataloader, ShardSampler,
                                   _start_method_for)
try: from fastcb_nb import schedule as _schedule          # adds Learner.lr_find / fit_one_cycle
except ImportError: _schedule = None
try: from fastcb_nb.callbacks import CSVLogger, SaveModelCallback
except ImportError: CSVLogger = SaveModelCallback = None

PG_TIMEOUT = 60          # seconds a collective may wait for a peer before it fails
LAUNCH_TIMEOUT = 180     # seconds a whole launch may take before it is stopped

# One process with batches of 2*B must train exactly like two processes with batches of B (no shuffling, SGD, mean
# loss): DistributedSampler gives rank r the samples r, r+2, r+4... so the two rank batches k together are the
# single-process batch k, and DDP averages the two mean gradients into the mean gradient of the combined batch.
N_TRAIN, N_VALID, B, EPOCHS, LR = 96, 37, 8, 2, 0.1


def make_data(bs, shuffle=False):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 2, generator=g)
    x = torch.randn(N_TRAIN + N_VALID, 8, generator=g)
    y = (x @ w + 0.3 * torch.randn(N_TRAIN + N_VALID, 2, generator=g)).argmax(1)
    train, valid = TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), TensorDataset(x[N_TRAIN:], y[N_TRAIN:])
    return DataBunch(DataLoader(train, batch_size=bs, shuffle=shuffle), DataLoader(valid, batch_size=bs), device='cpu')


def make_learner(bs, path, seed=0, shuffle=False):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    return Learner(make_data(bs, shuffle), model, opt_func=functools.partial(torch.optim.SGD, momentum=0.9),
                   loss_func=CrossEntropyFlat(), metrics=[accuracy], wd=1e-2, path=path)


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class RecordFirstBatch(Callback):
    "Keep the first training input of every epoch."
    def __init__(self): self.firsts = []
    def on_batch_begin(self, last_input, train, num_batch, **kwargs):
        if train and num_batch == 0: self.firsts.append(last_input.clone())


# -- what each process runs ----------------------------------------------------------------------------------------

def job_exact(out: Path) -> dict:
    "Each rank starts from different weights (seed = rank); trains, saves, exports, logs; returns what it saw."
    rank = rank_distrib()
    learn = make_learner(B, out / f'lib{rank}', seed=rank).to_distributed()
    cbs = [CSVLogger(learn)] if CSVLogger is not None else []
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        learn.fit(EPOCHS, LR, callbacks=cbs)
        learn.save('final')
        learn.export()
    rec = learn.recorder
    return dict(rank=rank, world=num_distrib(), state=state_of(learn.model), val_losses=list(rec.val_losses),
                metrics=[list(m) for m in rec.metrics], nb_batches=list(rec.nb_batches), printed=printed.getvalue(),
                validate=[float(v) for v in learn.validate()], model_type=type(learn.model).__name__,
                sampler_epoch=learn.data.train_dl.sampler.epoch)


def job_train(out: Path) -> None:
    "What the torchrun test runs: both jobs, each rank recording what it saw."
    rank = rank_distrib()
    torch.save(job_exact(out), out / f'exact{rank}.pt')           # the test's own records, not the library's
    if _schedule is not None: torch.save(job_schedules(out), out / f'schedules{rank}.pt')


def job_schedules(out: Path) -> dict:
    "Shuffled data: set_epoch, lr_find (stop decided on rank 0) and fit_one_cycle with SaveModelCallback."
    rank = rank_distrib()
    # one folder for both ranks, as in a real job: rank 0 saves the best model, every rank loads it at the end
    learn = make_learner(B, out / 'sched', seed=rank, shuffle=True).to_distributed()
    res = dict(rank=rank)
    with contextlib.redirect_stdout(io.StringIO()):
        learn.lr_find(start_lr=1e-3, end_lr=1e4, num_it=40)
        res['lr_find_lrs'] = list(learn.recorder.lrs)
        res['after_lr_find'] = state_of(learn.model)
        firsts = RecordFirstBatch()
        cbs = [firsts] + ([SaveModelCallback(learn)] if SaveModelCallback is not None else [])
        learn.fit_one_cycle(3, 0.05, callbacks=cbs)
    res.update(one_cycle_lrs=list(learn.recorder.lrs), firsts=firsts.firsts, state=state_of(learn.model),
               val_losses=list(learn.recorder.val_losses))
    return res


class FailOnRank1(Callback):
    def on_batch_end(self, iteration, train, **kwargs):
        if train and iteration == 2 and rank_distrib() == 1: raise ValueError('rank 1 fails on purpose')


def job_fail(out: Path) -> None:
    learn = make_learner(B, out / f'fail{rank_distrib()}').to_distributed()
    with contextlib.redirect_stdout(io.StringIO()): learn.fit(3, LR, callbacks=[FailOnRank1()])


def fn_exact(out):
    "For `launch(function)`: the exact-equivalence job, the tensors returned through the launcher."
    return job_exact(Path(out))


def fn_fail():
    if rank_distrib() == 1: raise ValueError('rank 1 fails on purpose')
    torch.distributed.barrier()          # rank 0 would wait here forever without the launcher stopping it


def fn_stuck_collective():
    "Rank 1 never joins the all_reduce: rank 0's collective must fail after the process-group timeout."
    if rank_distrib() == 1: time.sleep(60)
    else: torch.distributed.all_reduce(torch.ones(1))


def fn_sleep():
    time.sleep(60)


# -- the single-process reference and the checks ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "Single process, batches of 2*B, rank 0's initial weights."
    learn = make_learner(2 * B, tmp_path_factory.mktemp('ref'), seed=0)
    learn.silent = True
    with contextlib.redirect_stdout(io.StringIO()): learn.fit(EPOCHS, LR)
    return dict(state=state_of(learn.model), val_losses=list(learn.recorder.val_losses),
                metrics=[list(m) for m in learn.recorder.metrics], nb_batches=list(learn.recorder.nb_batches))


def check_exact(results, reference):
    r0, r1 = results
    assert (r0['rank'], r1['rank'], r0['world'], r1['world']) == (0, 1, 2, 2)
    for k in r0['state']:
        assert torch.equal(r0['state'][k], r1['state'][k]), f'{k} differs between the ranks'
        assert torch.allclose(r0['state'][k], reference['state'][k], atol=1e-5, rtol=0), \
            f'{k} differs from single-process training on the combined batch'
    # same number of steps as the single process; validation loss and accuracy are the global ones, on every rank
    assert r0['nb_batches'] == r1['nb_batches'] == reference['nb_batches'] == [N_TRAIN // (2 * B)] * EPOCHS
    for r in (r0, r1):
        assert r['val_losses'] == pytest.approx(reference['val_losses'], abs=1e-5)
        assert sum(r['metrics'], []) == pytest.approx(sum(reference['metrics'], []), abs=1e-6)
        assert r['validate'][0] == pytest.approx(r['val_losses'][-1], abs=1e-6)
        assert r['model_type'] == 'Sequential' and r['sampler_epoch'] == EPOCHS - 1


def check_only_rank0_writes(results, out: Path):
    printed0, printed1 = results[0]['printed'], results[1]['printed']
    assert 'train_loss' in printed0 and 'valid_loss' in printed0 and 'accuracy' in printed0
    assert printed1 == '', f'rank 1 printed: {printed1[:300]!r}'
    assert (out / 'lib0' / 'models' / 'final.pth').is_file() and (out / 'lib0' / 'export.pkl').is_file()
    if CSVLogger is not None:
        rows = (out / 'lib0' / 'history.csv').read_text().splitlines()
        assert rows[0].startswith('epoch,train_loss,valid_loss,accuracy') and len(rows) == 1 + EPOCHS
    written1 = [p for p in (out / 'lib1').rglob('*')] if (out / 'lib1').exists() else []
    assert written1 == [], f'rank 1 wrote {written1}'


def load_results(out: Path, name: str):
    return [torch.load(out / f'{name}{r}.pt', weights_only=False) for r in (0, 1)]


# -- tests -----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def torchrun_run(tmp_path_factory):
    "One torchrun launch (via `launch(script)`) of 2 gloo processes running `job_train`; returns its output and folder."
    out = tmp_path_factory.mktemp('torchrun')
    t0 = time.monotonic()
    output = launch(str(HERE), nprocs=2, args=['--job', 'train', str(out)], timeout=LAUNCH_TIMEOUT, echo=False)
    assert time.monotonic() - t0 < LAUNCH_TIMEOUT
    return output, out


def test_torchrun_two_processes(torchrun_run, reference):
    "Identical weights on both ranks, equal to single-process training on the combined batch; rank 0 alone writes."
    output, out = torchrun_run
    results = load_results(out, 'exact')
    check_exact(results, reference)
    check_only_rank0_writes(results, out)
    assert 'job train finished on rank 0' in output and 'job train finished on rank 1' in output


@pytest.mark.skipif(_schedule is None, reason='fastcb_nb.schedule (lr_find, fit_one_cycle) is not available')
def test_torchrun_schedules(torchrun_run):
    "lr_find and fit_one_cycle under DDP: every rank follows the same schedule and stops at the same batch."
    r0, r1 = load_results(torchrun_run[1], 'schedules')
    assert len(r0['lr_find_lrs']) == len(r1['lr_find_lrs']) and r0['lr_find_lrs'] == r1['lr_find_lrs']
    assert 2 <= len(r0['lr_find_lrs']) <= 40
    # lr_find restores the weights it started from: rank 0's initial weights, broadcast by DDP, on both ranks
    torch.manual_seed(0)
    init = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).state_dict()
    for k in init:
        assert torch.equal(r0['after_lr_find'][k], init[k]) and torch.equal(r1['after_lr_find'][k], init[k])
        assert torch.equal(r0['state'][k], r1['state'][k])
    assert r0['one_cycle_lrs'] == r1['one_cycle_lrs'] and len(r0['one_cycle_lrs']) == 3 * N_TRAIN // (2 * B)
    assert r0['val_losses'] == r1['val_losses'] and len(r0['val_losses']) == 3
    if SaveModelCallback is not None:          # both ranks ended on the best model that rank 0 saved
        best = torch.load(torchrun_run[1] / 'sched' / 'models' / 'bestmodel.pth', weights_only=True)['model']
        assert all(torch.equal(best[k], r0['state'][k]) for k in best)
    # DistributedSampler: the ranks draw different samples, and set_epoch gives every epoch a new order
    f0, f1 = r0['firsts'], r1['firsts']
    assert len(f0) == len(f1) == 3
    assert not torch.equal(f0[0], f1[0])
    assert not torch.equal(f0[0], f0[1]) and not torch.equal(f0[1], f0[2])


def test_torchrun_failure_ends_the_job(tmp_path):
    "One rank raising ends the whole job quickly with an error naming the exception (no hang)."
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        launch(str(HERE), nprocs=2, args=['--job', 'fail', str(tmp_path)], timeout=LAUNCH_TIMEOUT, echo=False)
    assert time.monotonic() - t0 < PG_TIMEOUT      # ended by the failure, not by a timeout
    msg = str(e.value)
    assert 'exit code' in msg and 'rank 1 fails on purpose' in msg and 'ValueError' in msg


def test_launch_function_spawn(tmp_path, reference):
    "`launch(function)` with spawn: the results come back by rank and match single-process training."
    results = launch(fn_exact, nprocs=2, args=(str(tmp_path),), timeout=LAUNCH_TIMEOUT, pg_timeout=PG_TIMEOUT)
    check_exact(results, reference)
    check_only_rank0_writes(results, tmp_path)


def test_launch_function_fork_as_in_a_notebook(tmp_path, reference):
    "The notebook path: a function started with fork trains the same way."
    results = launch(fn_exact, nprocs=2, args=(str(tmp_path),), timeout=LAUNCH_TIMEOUT, pg_timeout=PG_TIMEOUT,
                     start_method='fork')
    check_exact(results, reference)


def test_launch_function_failure_raises():
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match='rank 1') as e:
        launch(fn_fail, nprocs=2, timeout=LAUNCH_TIMEOUT, pg_timeout=PG_TIMEOUT, start_method='fork')
    assert 'rank 1 fails on purpose' in str(e.value) and time.monotonic() - t0 < PG_TIMEOUT


def test_process_group_timeout_turns_a_hang_into_an_error():
    "A collective whose peer never comes fails after pg_timeout, and launch reports it."
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match='rank 0'):
        launch(fn_stuck_collective, nprocs=2, timeout=LAUNCH_TIMEOUT, pg_timeout=3, start_method='fork')
    assert time.monotonic() - t0 < 30


def test_launch_timeout_stops_the_processes():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        launch(fn_sleep, nprocs=2, timeout=3, pg_timeout=PG_TIMEOUT, start_method='fork')
    assert time.monotonic() - t0 < 20


# -- in-process checks -------------------------------------------------------------------------------------------------

def test_without_torchrun_a_script_trains_alone(tmp_path, monkeypatch):
    "Plain `python script.py`: setup_distrib sets nothing up, to_distributed warns and leaves the learner as it was."
    for k in ('RANK', 'WORLD_SIZE'): monkeypatch.delenv(k, raising=False)
    assert setup_distrib() == 0 and not distrib_running()
    learn = make_learner(B, tmp_path)
    fns, cbs, dl = list(learn.callback_fns), list(learn.callbacks), learn.data.train_dl.dl
    with pytest.warns(UserWarning, match='torchrun'): assert learn.to_distributed() is learn
    assert learn.callback_fns == fns and learn.callbacks == cbs and learn.data.train_dl.dl is dl


def test_launch_arguments(tmp_path):
    with pytest.raises(ValueError, match='nprocs'): launch(fn_sleep, nprocs=0)
    with pytest.raises(FileNotFoundError): launch(str(tmp_path / 'missing.py'))
    with pytest.raises(TypeError, match='fn'): launch(42)


def test_start_method(monkeypatch):
    assert _start_method_for(fn_sleep) == 'spawn'                 # importable from its module
    def in_notebook(): pass
    in_notebook.__module__ = '__main__'
    monkeypatch.setitem(sys.modules, '__main__', type(sys)('__main__'))   # a kernel's __main__ has no __file__
    assert _start_method_for(in_notebook) == 'fork'


def test_distrib_dataloader_errors():
    class Stream(IterableDataset):
        def __iter__(self): return iter([])
    with pytest.raises(ValueError, match='IterableDataset'): distrib_dataloader(DataLoader(Stream()), True, 2, 0)
    ds = TensorDataset(torch.arange(10.))
    bs = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(ds), 2, False)
    with pytest.raises(ValueError, match='batch_sampler'): distrib_dataloader(DataLoader(ds, batch_sampler=bs), True, 2, 0)
    with pytest.raises(ValueError, match='valid_dl'):
        distrib_dataloader(DataLoader(TensorDataset(torch.arange(1.))), False, 2, 0)
    with pytest.raises(ValueError, match='rank'): ShardSampler(4, 2, 2)


# -- this file as the torchrun script ----------------------------------------------------------------------------------

JOBS = {'train': job_train, 'fail': job_fail}


def main(argv):
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument('--job', choices=sorted(JOBS), required=True)
    p.add_argument('out')
    args = p.parse_args(argv)
    out = Path(args.out)
    setup_distrib(timeout=PG_TIMEOUT)
    try:
        JOBS[args.job](out)
        print(f'job {args.job} finished on rank {rank_distrib()}')
    finally:
        cleanup_distrib()


if __name__ == '__main__':
    main(sys.argv[1:])

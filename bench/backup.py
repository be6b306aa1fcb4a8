"""What `BackupAndRestore` costs, measured side by side in one run.

1. Writing one backup of a 1M-parameter model (an MLP 512->1024->512->2 trained one batch with Adam, so the
   optimizer holds its moments) against `learn.save('model')` of the same learner (weights and optimizer state,
   written atomically and fsync'ed). The backup is timed as the loop takes it every epoch (snapshot, serialization,
   atomic rename, no fsync) and as it is written when a run is interrupted (fsync'ed before the rename).
2. `every='epoch'` on the workload of bench/overhead.py (MLP 8->8->2, batch 64, 200 training + 50 validation batches,
   3 epochs, one thread): `Learner.fit` with and without a `BackupAndRestore` (2 backups, at the ends of epochs 1 and
   2, and the in-memory snapshot at the start). Timed in CPU time of the process (all threads) and in wall time.
   The cost is a fixed amount per backup (a few torch.save records, the random generators' states), so the ratio
   falls as epochs get longer: 3. repeats 2. with 10 times as many batches per epoch.

Rounds are interleaved (each round times both sides back to back); medians of the per-round ratios are reported.

    python bench/backup.py [--rounds 15]
"""
import argparse, contextlib, os, statistics, sys, tempfile, time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, HERE)
from overhead import N_TRAIN, N_VALID, EPOCHS, LR, make_batches, make_learner  # noqa: E402
from fastcb_nb.learner import Learner, DataBunch, AdamW, CrossEntropyFlat  # noqa: E402
from fastcb_nb.backup import BackupAndRestore  # noqa: E402


def big_learner(path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 2))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(64, 512, generator=g), torch.randint(0, 2, (64,), generator=g)) for _ in range(4)]
    learn = Learner(DataBunch(batches, batches[:1], device='cpu'), model, opt_func=AdamW,
                    loss_func=CrossEntropyFlat(), path=path, silent=True)
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null): learn.fit(1, 1e-3)
    return learn


def backup_writer(learn):
    "A BackupAndRestore set up by a real fit and left active after it, so that `_backup` can be called again."
    class Kept(BackupAndRestore):
        def on_train_end(self, **kwargs): self._held.remove()
    cb = Kept(learn, name='bench_backup')
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null): learn.fit(1, 1e-3, callbacks=[cb])
    return cb


def time_save(learn):
    t0 = time.perf_counter()
    learn.save('bench_model')
    return time.perf_counter() - t0


def time_backup(cb):
    t0 = time.perf_counter()
    cb._backup((1, 1, 5))
    t1 = time.perf_counter()
    cb._backup((1, 1, 5), durable=True)
    return t1 - t0, time.perf_counter() - t1


def fit_time(train, valid, path, backup: bool):
    learn = make_learner(train, valid)
    learn.path = path
    learn.create_opt(LR, learn.wd)
    cbs = [BackupAndRestore(learn, name='bench_epoch')] if backup else []
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        c0, w0 = time.process_time(), time.perf_counter()
        learn.fit(EPOCHS, LR, callbacks=cbs)
        return time.process_time() - c0, time.perf_counter() - w0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=15)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        learn = big_learner(tmp)
        n_params = sum(p.numel() for p in learn.model.parameters())
        cb = backup_writer(learn)
        time_save(learn); time_backup(cb)                          # warm-up
        saves, waits, durable = [], [], []
        for _ in range(args.rounds):
            saves.append(time_save(learn))
            w, d = time_backup(cb)
            waits.append(w); durable.append(d)
        size_b, size_s = cb.path.stat().st_size, (learn.path / learn.model_dir / 'bench_model.pth').stat().st_size
        print(f'1. one backup of a {n_params / 1e6:.2f}M-parameter model with Adam state '
              f'({size_b / 2**20:.1f} MiB; learn.save: {size_s / 2**20:.1f} MiB), median of {args.rounds} rounds:')
        print(f'   learn.save (fsync included)          : {statistics.median(saves) * 1e3:7.1f} ms')
        print(f'   backup every epoch (no fsync)        : {statistics.median(waits) * 1e3:7.1f} ms   ratio to save '
              f'{statistics.median(w / s for w, s in zip(waits, saves)):.2f}')
        print(f'   backup at an interruption (fsync)    : {statistics.median(durable) * 1e3:7.1f} ms   ratio to save '
              f'{statistics.median(d / s for d, s in zip(durable, saves)):.2f}   (target < 2)')

        train, valid = make_batches(N_TRAIN, 1), make_batches(N_VALID, 2)
        fit_time(train, valid, tmp, False); fit_time(train, valid, tmp, True)   # warm-up
        plain, backed = [], []
        for i in range(args.rounds * 2):
            order = (False, True) if i % 2 == 0 else (True, False)
            for b in order: (backed if b else plain).append(fit_time(train, valid, tmp, b))
        cpu = statistics.median(b[0] / a[0] for a, b in zip(plain, backed))
        wall = statistics.median(b[1] / a[1] for a, b in zip(plain, backed))
        print(f"2. fit, 3 epochs of the overhead benchmark, with BackupAndRestore(every='epoch') / without, "
              f"median of {args.rounds * 2} rounds:")
        print(f'   fit without            : {statistics.median(a[0] for a in plain) * 1e3:7.1f} ms CPU')
        print(f'   ratio, CPU time        : {cpu:.3f}   (target < 1.02)')
        print(f'   ratio, wall time       : {wall:.3f}')
        print(f'   cost per fit (CPU)     : {statistics.median(b[0] - a[0] for a, b in zip(plain, backed)) * 1e3:7.2f} ms '
              f'(3 snapshots, 2 files written, the events)')

        train = make_batches(N_TRAIN * 10, 3)
        plain, backed = [], []
        rounds = max(args.rounds // 3, 3)
        for i in range(rounds * 2):
            order = (False, True) if i % 2 == 0 else (True, False)
            for b in order: (backed if b else plain).append(fit_time(train, valid, tmp, b))
        cpu = statistics.median(b[0] / a[0] for a, b in zip(plain, backed))
        print(f"3. the same with epochs 10 times as long ({N_TRAIN * 10} batches), median of {rounds * 2} rounds:")
        print(f'   fit without            : {statistics.median(a[0] for a in plain) * 1e3:7.1f} ms CPU')
        print(f'   ratio, CPU time        : {cpu:.3f}')


if __name__ == '__main__':
    main()

"""GPU check (issue 6): on a CUDA machine, train small models and count the device-to-host syncs per training batch.

    python bench/gpu_check.py            # from the repository root; the package need not be installed
    python bench/gpu_check.py --device cpu   # dry run of the same checks on the CPU (no syncs to count)

Checks, each reported on its own and summed up in one line at the end:
  mlp_fit        MLP 8->8->2 (the overhead benchmark's model), `fit` with accuracy, pinned DataLoader: batches and
                 model on the GPU, no host sync in a training batch, the validation loss goes down.
  convnet_1cycle a small convnet (conv, BatchNorm, pooling) with `fit_one_cycle`: no sync in a batch, loss down.
  lr_find        `lr_find` on the MLP: at most one sync per batch with `stop_div` (its divergence test), none without;
                 the weights restored exactly.
  fp16           `MixedPrecision`: float16 autocast with a GradScaler on CUDA, the loss goes down; at most one sync
                 per batch: torch's own (GradScaler.step reads its overflow flag), none of the loop's.
  amp_ratio      the convnet trained with float16 mixed precision by `fit` and by a plain PyTorch loop (autocast +
                 GradScaler, the same model, data and optimizer), side by side: the ratio of their times.
  ddp_1proc      `to_distributed` in a process group of one (NCCL on CUDA): the DDP path trains and syncs as above.
Syncs are counted with `torch.cuda.set_sync_debug_mode('warn')` (fastcb_nb.distributed.HostSyncCounter). A run may
have two one-off syncs (allowed); the exact counts are printed. Without CUDA (and without
`--device cpu`) it prints that it was skipped and exits 0. Exit code 1 when a check fails. Finishes in well under
3 minutes on any recent GPU.
"""
import argparse, os, sys, threading, time, traceback, types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path: sys.path.insert(0, ROOT)

import torch
from torch import nn

ONE_OFF_SYNCS = 2          # allowed once per run (the training batches themselves make none)
TIME_LIMIT = 150           # seconds; checks not started by then are reported as not run
HARD_LIMIT = 170           # seconds; a check still running then (a hang) ends the script with a failure


def _stand_in_fastprogress():
    "A silent stand-in for fastprogress (a dependency of the package) on a bare machine that lacks it."
    mod = types.ModuleType('fastprogress.fastprogress')
    class ProgressBar:
        def __init__(self, gen, total=None, display=True, leave=True, parent=None, master=None, **kwargs):
            self.gen, self.total, self.comment, self.last_v = gen, total, '', None
            if parent is not None: parent.add_child(self)
        def __iter__(self): return iter(self.gen)
        def __len__(self): return len(self.gen)
        def on_interrupt(self): pass
        def update(self, val): pass
    class MasterBar(ProgressBar):
        def __init__(self, gen, cls=None, total=None, **kwargs):
            super().__init__(gen, total)
            self.main_bar = ProgressBar(gen, total)
        def add_child(self, child): pass
        def write(self, line, table=False): pass
        def update_graph(self, *args, **kwargs): pass
    mod.ProgressBar, mod.MasterBar = ProgressBar, MasterBar
    mod.ConsoleProgressBar, mod.ConsoleMasterBar = ProgressBar, MasterBar
    mod.NBProgressBar, mod.NBMasterBar = ProgressBar, MasterBar
    mod.progress_bar, mod.master_bar, mod.NO_BAR = ProgressBar, MasterBar, True
    mod.force_console_behavior = lambda: (MasterBar, ProgressBar)
    pkg = types.ModuleType('fastprogress')
    pkg.fastprogress, pkg.master_bar, pkg.progress_bar = mod, MasterBar, ProgressBar
    sys.modules['fastprogress'], sys.modules['fastprogress.fastprogress'] = pkg, mod


try: import fastprogress  # noqa: F401
except ImportError: _stand_in_fastprogress()


# -- models and data ----------------------------------------------------------------------------------------------

def mlp():
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


def convnet():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))


def image_data(device, n_train=2048, n_valid=512, bs=64):
    "16x16 noise images; the class says which half of the image is brighter."
    from torch.utils.data import DataLoader, TensorDataset
    from fastcb_nb.learner import DataBunch
    g = torch.Generator().manual_seed(0)
    def make(n):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 1, 16, 16, generator=g)
        x[y == 0, :, :8] += 0.5
        x[y == 1, :, 8:] += 0.5
        return TensorDataset(x, y)
    pin = device.type == 'cuda'
    return DataBunch(DataLoader(make(n_train), batch_size=bs, shuffle=True, generator=g, pin_memory=pin),
                     DataLoader(make(n_valid), batch_size=bs, pin_memory=pin), device=device)


def mlp_learner(device, n_train=6400, **kwargs):
    from fastcb_nb.learner import Learner, synthetic_data, CrossEntropyFlat, accuracy
    torch.manual_seed(0)
    data = synthetic_data(n_train=n_train, n_valid=640, bs=64, device=device, pin_memory=device.type == 'cuda')
    return Learner(data, mlp(), loss_func=CrossEntropyFlat(), metrics=[accuracy], silent=True, **kwargs)


# -- checks -------------------------------------------------------------------------------------------------------

def device_probe():
    "A callback that records where the training batches live and the dtype of the raw model output."
    from fastcb_nb.callback import Callback
    class DeviceProbe(Callback):
        def __init__(self): self.input_devices, self.out_dtypes = set(), set()
        def on_batch_begin(self, last_input, train, **kwargs):
            if train: self.input_devices.add(last_input.device.type)
        def on_loss_begin(self, last_output, train, **kwargs):
            if train: self.out_dtypes.add(last_output.dtype)
    return DeviceProbe()


def check_syncs(counter, name, per_batch=0):
    "Fail unless the training phase made at most `per_batch` syncs per batch (plus the allowed one-off syncs)."
    if counter.supported and counter.train_syncs > per_batch * counter.train_batches + ONE_OFF_SYNCS:
        raise AssertionError(f"{name}: {counter.train_syncs} host syncs in {counter.train_batches} training batches "
                             f"(at most {per_batch} per batch expected)")
    return sync_text(counter)


def sync_text(counter):
    if not counter.supported: return 'syncs n/a'
    return f'{counter.per_batch:.2f} syncs/batch ({counter.train_syncs}/{counter.train_batches})'


def train_and_check(learn, name, run, per_batch=0):
    "Run `run(callbacks)` with a sync counter and a device probe; check the device, the syncs and the loss."
    from fastcb_nb.distributed import HostSyncCounter
    device = learn.data.device
    before = learn.validate()[0]
    counter, probe = HostSyncCounter(), device_probe()
    run([counter, probe])
    after = learn.validate()[0]
    if probe.input_devices != {device.type}: raise AssertionError(f"{name}: batches on {probe.input_devices}, not {device}")
    if {p.device.type for p in learn.model.parameters()} != {device.type}: raise AssertionError(f"{name}: model not on {device}")
    if not after < before: raise AssertionError(f"{name}: validation loss did not go down ({before:.4f} -> {after:.4f})")
    return counter, probe, f'loss {before:.3f}->{after:.3f}, {check_syncs(counter, name, per_batch)}'


def check_mlp_fit(device):
    learn = mlp_learner(device)
    return train_and_check(learn, 'mlp_fit', lambda cbs: learn.fit(2, 1e-2, callbacks=cbs))[2]


def check_convnet_one_cycle(device):
    from fastcb_nb.learner import Learner, CrossEntropyFlat, accuracy
    torch.manual_seed(0)
    learn = Learner(image_data(device), convnet(), loss_func=CrossEntropyFlat(), metrics=[accuracy], silent=True)
    return train_and_check(learn, 'convnet_1cycle', lambda cbs: learn.fit_one_cycle(2, 1e-2, callbacks=cbs))[2]


def check_lr_find(device):
    "With `stop_div` (the default): at most one sync per step, its divergence test; without: none in a step."
    from fastcb_nb.distributed import HostSyncCounter
    learn = mlp_learner(device)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    texts = []
    for stop_div in (True, False):
        counter = HostSyncCounter()
        learn.callbacks.append(counter)          # lr_find takes no callbacks: a persistent one joins its fit
        try: learn.lr_find(num_it=100, stop_div=stop_div)
        finally: learn.callbacks.remove(counter)
        n = len(learn.recorder.lrs)
        if not 2 <= n <= 100 or (not stop_div and n != 100): raise AssertionError(f"lr_find recorded {n} batches")
        for k, v in learn.model.state_dict().items():
            if not torch.equal(v, before[k]): raise AssertionError(f"lr_find did not restore {k}")
        name = f'lr_find(stop_div={stop_div})'
        texts.append(f'{name}: {n} batches, {check_syncs(counter, name, per_batch=1 if stop_div else 0)}')
    return 'weights restored; ' + '; '.join(texts)


def check_fp16(device):
    try: from fastcb_nb.callbacks import MixedPrecision
    except ImportError: return 'skipped (no fastcb_nb.callbacks.MixedPrecision)'
    learn = mlp_learner(device)
    mp = MixedPrecision(learn)
    counter, probe, text = train_and_check(learn, 'fp16', lambda cbs: learn.fit(2, 1e-2, callbacks=cbs + [mp]), per_batch=1)
    if device.type == 'cuda':
        if probe.out_dtypes != {torch.float16}: raise AssertionError(f"fp16: model output dtype {probe.out_dtypes}, not float16")
        if mp.scaler is None: raise AssertionError("fp16: no GradScaler on CUDA")
    return f"{'/'.join(str(d).replace('torch.', '') for d in probe.out_dtypes)}, {text} (torch's GradScaler: 1 per step)"


def _plain_amp(device, data, epochs):
    "Seconds of a plain PyTorch loop: the convnet, float16 autocast and a GradScaler (bfloat16 without on the CPU)."
    torch.manual_seed(0)
    model = convnet().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-2, decoupled_weight_decay=True)
    dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loss_func = nn.CrossEntropyLoss()
    if device.type == 'cuda': torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in data.train_dl.dl:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype): out = model(xb)
            loss = loss_func(out.float(), yb)
            scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); opt.zero_grad()
        model.eval()
        with torch.no_grad():
            total = sum(loss_func(model(xb.to(device, non_blocking=True)).float(), yb.to(device, non_blocking=True))
                        for xb, yb in data.valid_dl.dl)
        float(total)
    if device.type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t0


def _fit_amp(device, data, epochs):
    from fastcb_nb.learner import Learner, CrossEntropyFlat
    torch.manual_seed(0)
    learn = Learner(data, convnet(), loss_func=CrossEntropyFlat(), silent=True).to_fp16()
    learn.create_opt(1e-3, 1e-2)
    if device.type == 'cuda': torch.cuda.synchronize()
    t0 = time.perf_counter()
    learn.fit(epochs, 1e-3)
    if device.type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t0


def check_amp_ratio(device, rounds=5, epochs=3):
    "fit against a plain loop, both with float16 mixed precision on the convnet, interleaved rounds (wall time)."
    import statistics
    data = image_data(device)
    _plain_amp(device, data, 1); _fit_amp(device, data, 1)                # warm-up (kernels, allocator, autotuning)
    plain, ours = [], []
    for _ in range(rounds):
        plain.append(_plain_amp(device, data, epochs)); ours.append(_fit_amp(device, data, epochs))
    ratio = statistics.median(b / a for a, b in zip(plain, ours))
    if ratio > 1.5: raise AssertionError(f"amp_ratio: fit took {ratio:.2f}x the plain loop")
    return f'fit/plain {ratio:.3f} (median of {rounds} rounds; plain {statistics.median(plain):.2f} s for {epochs} epochs)'


def check_ddp_one_process(device):
    from fastcb_nb.core import distrib_running
    from fastcb_nb.distributed import setup_distrib, cleanup_distrib, free_port
    env = {k: os.environ.get(k) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}
    if env['WORLD_SIZE'] not in (None, '1'): return 'skipped (already in a multi-process job)'
    os.environ.update(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()))
    try:
        setup_distrib(backend='nccl' if device.type == 'cuda' else 'gloo', timeout=60)
        backend = torch.distributed.get_backend()
        learn = mlp_learner(device).to_distributed()
        text = train_and_check(learn, 'ddp_1proc', lambda cbs: learn.fit(2, 1e-2, callbacks=cbs))[2]
        if type(learn.model) is not nn.Sequential: raise AssertionError("the model is still wrapped after fit")
        return f'{backend}, {text}'
    finally:
        if distrib_running(): cleanup_distrib()
        for k, v in env.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v


CHECKS = [('mlp_fit', check_mlp_fit), ('convnet_1cycle', check_convnet_one_cycle), ('lr_find', check_lr_find),
          ('fp16', check_fp16), ('amp_ratio', check_amp_ratio), ('ddp_1proc', check_ddp_one_process)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default=None, help="'cuda' (default when available) or 'cpu' for a dry run")
    args = p.parse_args(argv)
    if args.device is None and not torch.cuda.is_available():
        print('gpu_check: skipped (no CUDA device; `--device cpu` runs a dry run of the checks)')
        return 0
    device = torch.device(args.device or 'cuda')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        where = f'{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}'
    else: where = f'CPU dry run, torch {torch.__version__}'
    print(f'gpu_check: {where}', flush=True)
    from fastprogress import fastprogress as fp
    fp.NO_BAR = True                     # progress bars would bury the report (the learners are silent: no table)
    t0, results, running = time.monotonic(), [], [None]
    def summary(extra=''):
        failed = [n for n, ok, _ in results if not ok] + ([running[0]] if extra else [])
        status = 'OK' if not failed else f'FAILED ({", ".join(failed)})'
        parts = [f'{n}: {t}' for n, _, t in results] + ([extra] if extra else [])
        return f'gpu_check: {status} | ' + ' | '.join(parts) + f' | {time.monotonic() - t0:.1f}s'
    def hard_stop():
        print(summary(f'{running[0]}: still running after {HARD_LIMIT} s (hung?)'), flush=True)
        os._exit(1)
    watchdog = threading.Timer(HARD_LIMIT, hard_stop)
    watchdog.daemon = True
    watchdog.start()
    for name, check in CHECKS:
        running[0] = name
        if time.monotonic() - t0 > TIME_LIMIT:
            results.append((name, False, 'not run (time limit)'))
            continue
        t = time.monotonic()
        try: ok, text = True, check(device)
        except Exception as e:
            ok, text = False, f'FAILED: {type(e).__name__}: {e}'
            traceback.print_exc()
        if device.type == 'cuda': torch.cuda.synchronize()
        results.append((name, ok, f'{text} [{time.monotonic() - t:.1f}s]'))
        print(f'  {name:15s} {"ok  " if ok else "FAIL"} {results[-1][2]}', flush=True)
    watchdog.cancel()
    print(summary(), flush=True)
    return 1 if any(not ok for _, ok, _ in results) else 0


if __name__ == '__main__':
    sys.exit(main())

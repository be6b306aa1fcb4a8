"""Instructions per training batch of `fit` / `fit_one_cycle` / `lr_find` and of the plain PyTorch loops they are
timed against, counted with valgrind's callgrind (deterministic, unlike time on a shared machine).

Each measurement runs the workload of bench/overhead.py for E=1 and E=3 epochs in separate processes under
`valgrind --tool=callgrind`; (count(3) - count(1)) / (2 * 200 batches) removes start-up and set-up (and so the fixed
cost of a run: what it costs per batch, nothing else). The plain loops: `plain` (bench/overhead.py's), `plain_1cycle`
(with torch's OneCycleLR stepped each batch) and `sweep` (bench/schedule_overhead.py's exponential sweep with its
smoothing and divergence test); each ratio is to its own. `fit_trace` is `fit` with an `EventTrace(3)`, against `fit`
(issue 15's figure: a trace past its recorded batches). Slow (a minute or two per count, `--jobs` at once).
Needs Debian's valgrind.

    python bench/instructions.py [--what plain fit plain_1cycle fit_one_cycle sweep lr_find fit_trace] [--jobs 2]
"""
import argparse, concurrent.futures, os, re, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = r'''
import contextlib, os, sys
sys.path.insert(0, sys.argv[3]); sys.path.insert(0, os.path.join(sys.argv[3], 'bench'))
import torch
torch.set_num_threads(1)
from overhead import make_batches, make_model, make_learner, N_TRAIN, N_VALID, LR, WD
what, epochs = sys.argv[1], int(sys.argv[2])
train, valid = make_batches(N_TRAIN, 1), make_batches(N_VALID, 2)
if what in ('plain', 'plain_1cycle', 'sweep'):
    import math
    from torch import nn
    m = make_model(); opt = torch.optim.AdamW(m.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=WD)
    lf, n = nn.CrossEntropyLoss(), epochs * len(train)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=n, pct_start=0.3, div_factor=25.,
                                                 final_div_factor=1e4) if what == 'plain_1cycle' else None)
    mov_avg, best, i = 0., math.inf, 0
    for _ in range(epochs):
        for xb, yb in train:
            if what == 'sweep':               # bench/schedule_overhead.py's plain sweep, step by step
                for g in opt.param_groups: g['lr'] = 1e-7 * (10 / 1e-7) ** (i / n)
            loss = lf(m(xb), yb); loss.backward(); opt.step(); opt.zero_grad()
            if sched is not None: sched.step()
            v, i = loss.item(), i + 1
            if what == 'sweep':
                mov_avg = 0.98 * mov_avg + 0.02 * v
                smooth = mov_avg / (1 - 0.98 ** i); best = min(best, smooth)
                diverged = smooth > 4 * best or math.isnan(smooth)
else:
    from fastcb_nb.trace import EventTrace
    learn = make_learner(train, [])
    learn.data.valid_dl = None
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        if what == 'fit': learn.fit(epochs, LR)
        elif what == 'fit_trace': learn.fit(epochs, LR, callbacks=[EventTrace(3)])   # past its 3 batches: timing only
        elif what == 'fit_one_cycle': learn.fit_one_cycle(epochs, LR, wd=WD)
        elif what == 'lr_find': learn.lr_find(1e-7, 10., num_it=N_TRAIN * epochs, stop_div=False)
'''

# one thread everywhere (numpy's OpenBLAS thread server adds instructions that vary run to run) and a fixed hash
# seed: with a random one, the same command's count per batch varies by up to 25% (dict and set layouts change)
ENV = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', PYTHONHASHSEED='0')


def count(what, epochs, root):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, 'cg.out')
        cmd = ['valgrind', '--tool=callgrind', f'--callgrind-out-file={out}', sys.executable, '-c', WORKER, what,
               str(epochs), root]
        r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
        m = re.search(r'Collected : (\d+)', r.stderr)
        if not m: raise SystemExit(r.stderr[-2000:])
        return int(m.group(1))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--what', nargs='+', default=['plain', 'fit', 'plain_1cycle', 'fit_one_cycle', 'sweep', 'lr_find', 'fit_trace'])
    p.add_argument('--root', default=os.path.join(HERE, '..'), help='the source tree to measure')
    p.add_argument('--jobs', type=int, default=2, help='valgrind processes at once')
    args = p.parse_args(argv)
    root, per = os.path.abspath(args.root), {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:     # each count is its own valgrind process
        counts = {(w, e): pool.submit(count, w, e, root) for w in args.what for e in (1, 3)}
        for w in args.what:
            per[w] = (counts[w, 3].result() - counts[w, 1].result()) / 400
            print(f'{w:14s} {per[w]:12,.0f} instructions per training batch', flush=True)
    for w, base in (('fit', 'plain'), ('fit_one_cycle', 'plain_1cycle'), ('lr_find', 'sweep'), ('fit_trace', 'fit')):
        if w in per and base in per: print(f'{w:14s} ratio to {base:12s} {per[w] / per[base]:.3f}')

if __name__ == '__main__':
    main()

"""fit, fit_one_cycle and lr_find of two source trees of fastcb_nb, side by side in one run (for "no slower than
before" checks across commits).

Each round starts one process per tree (alternating which goes first) that runs the workload of
bench/overhead.py — MLP 8->8->2, batch 64, 200 training + 50 validation batches, 3 epochs, one thread — with a
plain PyTorch loop, `fit`, `fit_one_cycle` and `lr_find(num_it=100)`, after a warm-up, and reports CPU seconds.
The workload is written here with the API both trees share, so both run the same code. Prints, per workload, the
median CPU time of each tree, the ratio B/A, and each tree's ratio to the plain loop (for lr_find: a plain sweep with
in-memory save/restore, as in bench/schedule_overhead.py) measured in the same process (the steadier figure: separate
processes run at different speeds on a shared machine).

    python bench/compare_trees.py --base /path/to/old/checkout [--new .] [--rounds 9]
    git worktree add /tmp/base HEAD~1 && python bench/compare_trees.py --base /tmp/base
"""
import argparse, json, os, statistics, subprocess, sys

WORKER = r'''
import contextlib, json, os, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from torch import nn
torch.set_num_threads(1)
from fastcb_nb.learner import Learner, DataBunch, CrossEntropyFlat, AdamW
N_TRAIN, N_VALID, BS, EPOCHS, LR, WD = 200, 50, 64, 3, 1e-3, 1e-2
def batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BS, 8, generator=g), torch.randint(0, 2, (BS,), generator=g)) for _ in range(n)]
train, valid = batches(N_TRAIN, 1), batches(N_VALID, 2)
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
def plain():
    m = model(); opt = torch.optim.AdamW(m.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=WD)
    lf = nn.CrossEntropyLoss(); t0 = time.process_time()
    for _ in range(EPOCHS):
        m.train()
        for xb, yb in train:
            loss = lf(m(xb), yb); loss.backward(); opt.step(); opt.zero_grad(); loss.item()
        m.eval()
        with torch.no_grad():
            tot = 0.
            for xb, yb in valid: tot += lf(m(xb), yb) * yb.shape[0]
            (tot / (len(valid) * BS)).item()
    return time.process_time() - t0
def plain_sweep():
    import copy, math
    m = model(); opt = torch.optim.AdamW(m.parameters(), lr=1e-7, betas=(0.9, 0.99), weight_decay=WD)
    lf = nn.CrossEntropyLoss(); t0 = time.process_time()
    saved = copy.deepcopy(m.state_dict()), copy.deepcopy(opt.state_dict())
    m.train(); mov, best = 0., math.inf
    for i, (xb, yb) in enumerate(train[:100]):
        for g in opt.param_groups: g['lr'] = 1e-7 * (10 / 1e-7) ** (i / 100)
        loss = lf(m(xb), yb); loss.backward(); opt.step(); opt.zero_grad()
        mov = 0.98 * mov + 0.02 * loss.item(); sm = mov / (1 - 0.98 ** (i + 1)); best = min(best, sm)
        diverged = sm > 4 * best or math.isnan(sm)
    m.load_state_dict(saved[0]); opt.load_state_dict(saved[1])
    return time.process_time() - t0
def learner():
    return Learner(DataBunch(train, valid, device='cpu'), model(), opt_func=AdamW, loss_func=CrossEntropyFlat(), wd=WD)
def timed(call):
    learn = learner()
    if call == 'lr_find': learn.create_opt(LR, WD)
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        t0 = time.process_time()
        if call == 'fit': learn.fit(EPOCHS, LR)
        elif call == 'fit_one_cycle': learn.fit_one_cycle(EPOCHS, LR, wd=WD)
        else: learn.lr_find(1e-7, 10., num_it=100, stop_div=False)
        return time.process_time() - t0
plain(); plain_sweep(); [timed(c) for c in ('fit', 'fit_one_cycle', 'lr_find')]        # warm-up
print(json.dumps({'plain': plain(), 'sweep': plain_sweep(), 'fit': timed('fit'), 'fit_one_cycle': timed('fit_one_cycle'),
                  'lr_find': timed('lr_find')}))
'''

def run(tree):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, '-c', WORKER, os.path.abspath(tree)], capture_output=True, text=True, env=env,
                         cwd=os.path.abspath(tree), timeout=600)
    if out.returncode != 0: raise SystemExit(f'{tree} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--base', required=True, help='the tree to compare against (A), e.g. a worktree of an older commit')
    p.add_argument('--new', default=os.path.join(os.path.dirname(__file__), '..'), help='the tree measured (B)')
    p.add_argument('--rounds', type=int, default=9)
    args = p.parse_args(argv)
    res = {'A': [], 'B': []}
    for r in range(args.rounds):
        order = (('A', args.base), ('B', args.new)) if r % 2 == 0 else (('B', args.new), ('A', args.base))
        for name, tree in order: res[name].append(run(tree))
    print(f'{args.rounds} interleaved rounds, CPU seconds (medians); A = {os.path.abspath(args.base)}, '
          f'B = {os.path.abspath(args.new)}')
    print(f"{'workload':14s} {'A':>8s} {'B':>8s} {'B/A':>7s} {'A/plain':>8s} {'B/plain':>8s}")
    for w in ('fit', 'fit_one_cycle', 'lr_find'):
        a, b = (statistics.median(x[w] for x in res[k]) for k in 'AB')
        base = 'sweep' if w == 'lr_find' else 'plain'
        pa, pb = (statistics.median(x[w] / x[base] for x in res[k]) for k in 'AB')
        print(f'{w:14s} {a:8.3f} {b:8.3f} {b / a:7.3f} {pa:8.3f} {pb:8.3f}')

if __name__ == '__main__':
    main()

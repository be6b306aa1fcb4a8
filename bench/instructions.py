"""Instructions per training batch of `fit` / `fit_one_cycle` / `lr_find` and of a plain PyTorch loop, counted with
valgrind's callgrind (deterministic, unlike time on a shared machine).

Each measurement runs the workload of bench/overhead.py for E=1 and E=3 epochs in separate processes under
`valgrind --tool=callgrind`; (count(3) - count(1)) / (2 * 200 batches) removes start-up and set-up. Slow (about a
minute per workload). Needs Debian's valgrind.

    python bench/instructions.py [--what plain fit fit_one_cycle lr_find]
"""
import argparse, os, re, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = r'''
import contextlib, os, sys
sys.path.insert(0, sys.argv[3]); sys.path.insert(0, os.path.join(sys.argv[3], 'bench'))
import torch
torch.set_num_threads(1)
from overhead import make_batches, make_model, make_learner, N_TRAIN, N_VALID, LR, WD
what, epochs = sys.argv[1], int(sys.argv[2])
train, valid = make_batches(N_TRAIN, 1), make_batches(N_VALID, 2)
if what == 'plain':
    from torch import nn
    m = make_model(); opt = torch.optim.AdamW(m.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=WD)
    lf = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for xb, yb in train:
            loss = lf(m(xb), yb); loss.backward(); opt.step(); opt.zero_grad(); loss.item()
else:
    learn = make_learner(train, [])
    learn.data.valid_dl = None
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        if what == 'fit': learn.fit(epochs, LR)
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
    p.add_argument('--what', nargs='+', default=['plain', 'fit', 'fit_one_cycle', 'lr_find'])
    p.add_argument('--root', default=os.path.join(HERE, '..'), help='the source tree to measure')
    args = p.parse_args(argv)
    per = {}
    for w in args.what:
        per[w] = (count(w, 3, os.path.abspath(args.root)) - count(w, 1, os.path.abspath(args.root))) / 400
        print(f'{w:14s} {per[w]:12,.0f} instructions per training batch', flush=True)
    if 'plain' in per:
        for w in per:
            if w != 'plain': print(f'{w:14s} ratio to plain {per[w] / per["plain"]:.3f}')

if __name__ == '__main__':
    main()

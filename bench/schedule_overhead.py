"""Per-batch overhead of `fit_one_cycle` and per-step overhead of `lr_find` over plain PyTorch, side by side in one run.

fit_one_cycle (issue 3, target <= 40 us per batch): the workload of bench/overhead.py (MLP 8->8->2, batch 64,
200 training + 50 validation batches, 3 epochs, one thread, pre-built batches), against a plain loop that steps
`torch.optim.lr_scheduler.OneCycleLR` (same max lr, div 25, final div 1e4, pct_start 0.3, cosine, momentum
0.95 -> 0.85 -> 0.95 on Adam's beta1) after every batch and calls `loss.item()` once per batch.

lr_find (issue 3, target <= 50 us per step for 100 steps): `learn.lr_find(num_it=100, stop_div=False)` on the same
training batches, against a plain exponential sweep from 1e-7 to 10 that keeps the model's and the optimizer's
state in memory (`copy.deepcopy` of both state dicts), sets the lr of every param group, trains 100 batches with
`loss.item()` and a smoothed-loss divergence check, then loads both states back. Both sides are timed whole (set-up
and restore included) and divided by the 100 steps. Without `stop_div` lr_find reads no loss during the sweep (the
curve comes back in one transfer at its end), as `fit` reads none per batch against the plain loop's `loss.item()`.

For reference it also times `fit_one_cycle` against `Learner.fit` at a constant lr: the cost of the schedule alone
(the rest of the overhead is the training loop's, measured by bench/overhead.py).

Rounds are interleaved as in bench/overhead.py (`timed_rounds`: the first side alternates, each run starts after a
`gc.collect()`) and timed in CPU time (`time.process_time`, one thread); medians are reported, the overhead as the
median of the per-round differences, with the quartiles of the per-round ratios.

    python bench/schedule_overhead.py [--rounds 51] [--lr-find-rounds 300]
"""
import argparse, contextlib, copy, math, os, statistics, sys, time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, HERE)
from overhead import (N_TRAIN, N_VALID, BS, EPOCHS, LR, WD, make_batches, make_model, make_learner,  # noqa: E402
                      plain_loop, learner_fit, timed_rounds, ratio_text)   # the same workload and rounds

NUM_IT, START_LR, END_LR = 100, 1e-7, 10.


# ---------------------------------------------------------------------------------------------------- fit_one_cycle
def plain_one_cycle(train, valid):
    "The plain loop of bench/overhead.py with torch's OneCycleLR stepped after every batch."
    def one_cycle(opt, n_steps):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=n_steps, pct_start=0.3,
                                                   anneal_strategy='cos', cycle_momentum=True, base_momentum=0.85,
                                                   max_momentum=0.95, div_factor=25., final_div_factor=1e4)
    return plain_loop(train, valid, make_sched=one_cycle)


def learner_one_cycle(train, valid):
    learn = make_learner(train, valid)
    learn.create_opt(LR, WD)                       # the plain loop's optimizer is also built before timing
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        t0 = time.process_time()
        learn.fit_one_cycle(EPOCHS, LR, wd=WD)
        elapsed = time.process_time() - t0
    assert len(learn.recorder.lrs) == EPOCHS * len(train)
    return elapsed


# ---------------------------------------------------------------------------------------------------------- lr_find
def plain_sweep(train, valid):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=START_LR, betas=(0.9, 0.99), weight_decay=WD)
    loss_func = nn.CrossEntropyLoss()
    t0 = time.process_time()
    saved = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    model.train()
    mov_avg, best, beta, steps = 0., math.inf, 0.98, 0
    for i, (xb, yb) in enumerate(train[:NUM_IT]):
        lr = START_LR * (END_LR / START_LR) ** (i / NUM_IT)
        for g in opt.param_groups: g['lr'] = lr
        loss = loss_func(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
        mov_avg = beta * mov_avg + (1 - beta) * loss.item()
        smooth = mov_avg / (1 - beta ** (i + 1))
        best = min(best, smooth)
        diverged = smooth > 4 * best or math.isnan(smooth)   # computed as lr_find does; not acted on (stop_div=False)
        steps += 1
    model.load_state_dict(saved[0])
    opt.load_state_dict(saved[1])
    elapsed = time.process_time() - t0
    assert steps == NUM_IT and diverged in (True, False)
    return elapsed


def learner_lr_find(train, valid):
    learn = make_learner(train, valid)
    learn.create_opt(LR, WD)                       # the plain sweep's optimizer is also built before timing
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        t0 = time.process_time()
        learn.lr_find(START_LR, END_LR, num_it=NUM_IT, stop_div=False)
        elapsed = time.process_time() - t0
    assert len(learn.recorder.lrs) == NUM_IT
    return elapsed


def compare(name, plain_fn, ours_fn, rounds, n_units, unit, target, train, valid, labels=('plain PyTorch', 'fastcb_nb')):
    plain, ours = timed_rounds(plain_fn, ours_fn, rounds, train, valid)
    tp, to = statistics.median(plain), statistics.median(ours)
    diff = statistics.median(b - a for a, b in zip(plain, ours))
    print(f'{name}')
    print(f'  {labels[0]:16s}: {tp / n_units * 1e6:8.1f} us/{unit} (median of {rounds} rounds, CPU time)')
    print(f'  {labels[1]:16s}: {to / n_units * 1e6:8.1f} us/{unit}')
    print(f'  overhead        : {diff / n_units * 1e6:8.1f} us per {unit}' + (f' (target <= {target})' if target else ''))
    print(f'  ratio ours/plain: {ratio_text(plain, ours)}' + ('; target <= 1.07)' if target else ')'))
    return diff / n_units * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=51,
                   help='rounds of fit_one_cycle (on a busy shared host single rounds spread by about +-10%%: 51 rounds pin '
                        'the median of the per-round ratios to about +-2%%, 15 only to about +-3.5%%)')
    p.add_argument('--lr-find-rounds', type=int, default=300,
                   help='rounds of lr_find (a tenth as long as a fit_one_cycle: 300 pin its median to about +-1%%)')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    train, valid = make_batches(N_TRAIN, 1), make_batches(N_VALID, 2)
    compare(f'fit_one_cycle({EPOCHS}) vs a plain loop with OneCycleLR ({EPOCHS * N_TRAIN} training batches)',
            plain_one_cycle, learner_one_cycle, args.rounds, EPOCHS * N_TRAIN, 'batch', 40, train, valid)
    compare('of which the schedule itself: fit_one_cycle vs Learner.fit at a constant lr (same loop, no target)',
            learner_fit, learner_one_cycle, args.rounds, EPOCHS * N_TRAIN, 'batch', None, train, valid,
            labels=('Learner.fit', 'fit_one_cycle'))
    compare(f'lr_find(num_it={NUM_IT}) vs a plain exponential sweep with in-memory save/restore',
            plain_sweep, learner_lr_find, args.lr_find_rounds, NUM_IT, 'step', 50, train, valid)


if __name__ == '__main__':
    main()

"""Per-batch overhead of `Learner.fit` over a plain PyTorch loop, measured side by side in one run.

Workload (issue 2): MLP 8->8->2, batch 64, 200 training + 50 validation batches, 3 epochs, one thread, batches
pre-built in a list. The plain loop calls `loss.item()` once per training batch and uses the same optimizer and
weight decay (Adam with decoupled decay: torch's AdamW with betas (0.9, 0.99)). `Learner.fit` runs with the default
Recorder and its progress output written to a null stream. Rounds are interleaved (`timed_rounds`: the two sides
alternate which goes first, and each run starts after a `gc.collect()`, so that neither inherits the other's garbage
or a full collection of it; the heap made before the rounds is frozen, so that collection is short) and timed in CPU
time (`time.process_time`, one thread), which a busy shared machine disturbs less than wall time; medians are
reported, the overhead as the median of the per-round differences, and the quartiles of the per-round ratios show
the spread; the ratios of the two sides' medians and of their lower quartiles (the runs a busy host disturbed least)
follow.

    python bench/overhead.py [--rounds 101]
"""
import argparse, contextlib, gc, os, statistics, sys, time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from fastcb_nb.learner import Learner, DataBunch, CrossEntropyFlat, AdamW  # noqa: E402
from fastcb_nb.testing import tiny_model  # noqa: E402

N_TRAIN, N_VALID, BS, EPOCHS, LR, WD = 200, 50, 64, 3, 1e-3, 1e-2


def make_batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BS, 8, generator=g), torch.randint(0, 2, (BS,), generator=g)) for _ in range(n)]


def make_model():
    "The MLP 8->8->2 (the testing module's tiny model), seeded."
    return tiny_model(8, 8, 2, seed=0)


def plain_loop(train, valid, make_sched=None):
    "CPU seconds of the plain PyTorch loop; `make_sched(opt, n_steps)` adds a torch lr scheduler stepped every batch."
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=WD)
    sched = make_sched(opt, EPOCHS * len(train)) if make_sched is not None else None
    loss_func = nn.CrossEntropyLoss()
    t0 = time.process_time()
    for _ in range(EPOCHS):
        model.train()
        for xb, yb in train:
            loss = loss_func(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if sched is not None: sched.step()
            loss.item()
        model.eval()
        with torch.no_grad():
            tot = 0.
            for xb, yb in valid: tot += loss_func(model(xb), yb) * yb.shape[0]
            (tot / (len(valid) * BS)).item()
    return time.process_time() - t0


def make_learner(train, valid, **kwargs):
    "A Learner on the same model, optimizer and weight decay as `plain_loop`."
    return Learner(DataBunch(train, valid, device='cpu'), make_model(), opt_func=AdamW, loss_func=CrossEntropyFlat(),
                   wd=WD, **kwargs)


def learner_fit(train, valid):
    learn = make_learner(train, valid)
    learn.create_opt(LR, WD)                       # the plain loop's optimizer is also built before timing
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        t0 = time.process_time()
        learn.fit(EPOCHS, LR)
        return time.process_time() - t0


def timed_rounds(plain_fn, ours_fn, rounds, train, valid) -> tuple:
    """`(plain times, our times)` of `rounds` interleaved rounds (after a warm-up of each): the first side alternates, each
    run starts after a `gc.collect()` of the garbage made since the warm-up (the heap before it is frozen: a full
    collection of it, about 0.1 s with torch loaded, would evict every cache before each run)."""
    plain_fn(train, valid); ours_fn(train, valid)   # warm-up
    gc.collect()
    gc.freeze()         # what exists now (torch, the batches) is never traversed again: a collection costs little
    plain, ours = [], []
    try:
        for i in range(rounds):
            order = ((plain, plain_fn), (ours, ours_fn))
            for times, fn in (order if i % 2 == 0 else order[::-1]):
                gc.collect()
                times.append(fn(train, valid))
    finally: gc.unfreeze()
    return plain, ours


def ratio_text(plain, ours, digits: int = 3) -> str:
    """The median of the per-round ratios ours/plain, with their quartiles; then the ratio of the two sides' medians and
    of their lower quartiles (a busy host only ever adds time: the faster runs are the least disturbed)."""
    ratios = [b / a for a, b in zip(plain, ours)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    low = (lambda t: statistics.quantiles(t, n=4)[0]) if len(ratios) > 1 else min
    d = digits
    return (f'{statistics.median(ratios):8.{d}f} (median of the per-round ratios, quartiles {q1:.{d}f}..{q3:.{d}f}; of '
            f'the medians: {statistics.median(ours) / statistics.median(plain):.{d}f}; of the lower quartiles: '
            f'{low(ours) / low(plain):.{d}f}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=101,
                   help='interleaved rounds (on a busy shared host single rounds spread by about +-10%%: 101 rounds pin the '
                        'median of the per-round ratios to about +-1.5%%, 41 to about +-2.5%%)')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    train, valid = make_batches(N_TRAIN, 1), make_batches(N_VALID, 2)
    plain, ours = timed_rounds(plain_loop, learner_fit, args.rounds, train, valid)
    n_batches = EPOCHS * N_TRAIN
    tp, to = statistics.median(plain), statistics.median(ours)
    # each round times both runs back to back; the median of the per-round differences resists machine noise
    diff = statistics.median(b - a for a, b in zip(plain, ours))
    print(f'plain loop      : {tp / n_batches * 1e6:8.1f} us/batch (median of {args.rounds} rounds, CPU time)')
    print(f'Learner.fit     : {to / n_batches * 1e6:8.1f} us/batch')
    print(f'overhead        : {diff / n_batches * 1e6:8.1f} us per training batch')
    print(f'ratio fit/plain : {ratio_text(plain, ours)}; target <= 1.07)')


if __name__ == '__main__':
    main()

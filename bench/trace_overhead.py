"""Cost of an `EventTrace` in a run: `Learner.fit` with `EventTrace(max_batches=3)` against the same fit without
it, measured side by side in one run.

Workload: the overhead benchmark's (`bench/overhead.py`: MLP 8->8->2, batch 64, 200 training + 50 validation
batches, 3 epochs, one thread, batches pre-built, the default Recorder, output to a null stream). Rounds alternate
which fit goes first, each fit starts after a `gc.collect()` (of what the warm-up left: the heap before it is
frozen), and fits are timed in CPU time (`time.process_time`); the figure is the median of the per-round ratios
(with trace / without). On a shared 2-core machine one round's ratio scatters by a few percent (the quartiles are
printed), hence the 101 rounds (about 35 s). After its first 3 batches the trace still times every callback call
(for `.times`), so the figure is what that costs over the whole run. Target: <= 1.01.

    python bench/trace_overhead.py [--rounds 101] [--max_batches 3]
"""
import argparse, contextlib, gc, os, statistics, sys, time

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from overhead import N_TRAIN, N_VALID, EPOCHS, LR, WD, make_batches, make_learner  # noqa: E402
from fastcb_nb.trace import EventTrace  # noqa: E402


def timed_fit(train, valid, trace=None) -> float:
    "CPU seconds of one `fit` (with `trace` among its callbacks when given)."
    learn = make_learner(train, valid)
    learn.create_opt(LR, WD)
    cbs = [trace] if trace is not None else []
    gc.collect()                                  # each fit starts from the same heap, whatever ran before it
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        t0 = time.process_time()
        learn.fit(EPOCHS, LR, callbacks=cbs)
        return time.process_time() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=101)
    p.add_argument('--max_batches', type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    train, valid = make_batches(N_TRAIN, 1), make_batches(N_VALID, 2)
    timed_fit(train, valid); timed_fit(train, valid, EventTrace(args.max_batches))      # warm-up
    gc.collect(); gc.freeze()      # the heap so far is never traversed again: the collection before each fit costs little
    plain, traced = [], []
    for i in range(args.rounds):
        times = {}
        for with_trace in ((False, True) if i % 2 == 0 else (True, False)):      # alternate which goes first
            run_trace = EventTrace(args.max_batches) if with_trace else None
            times[with_trace] = timed_fit(train, valid, run_trace)
            if with_trace: trace = run_trace
        plain.append(times[False])
        traced.append(times[True])
    n_batches = EPOCHS * N_TRAIN
    ratios = sorted(b / a for a, b in zip(plain, traced))
    ratio, (q1, _, q3) = statistics.median(ratios), (statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3)
    diff = statistics.median(b - a for a, b in zip(plain, traced))
    print(f'fit without trace : {statistics.median(plain) / n_batches * 1e6:8.1f} us/batch (median of {args.rounds} '
          f'rounds, CPU time)')
    print(f'fit with trace    : {statistics.median(traced) / n_batches * 1e6:8.1f} us/batch '
          f'({len(trace.events)} calls recorded, {sum(trace.calls.values())} timed)')
    print(f'difference        : {diff / n_batches * 1e6:8.2f} us per training batch')
    print(f'ratio traced/plain: {ratio:8.4f} (median of the per-round ratios, quartiles {q1:.4f}..{q3:.4f}; of the '
          f'fastest fits: {min(traced) / min(plain):.4f}; target <= 1.01)')


if __name__ == '__main__':
    main()

"""Cost of an `EventTrace` in a run: `Learner.fit` with `EventTrace(max_batches=3)` against the same fit without
it, measured side by side in one run.

Workload: the overhead benchmark's (`bench/overhead.py`: MLP 8->8->2, batch 64, 200 training + 50 validation
batches, 3 epochs, one thread, batches pre-built, the default Recorder, output to a null stream). Rounds are those
of bench/overhead.py (`timed_rounds`: the first fit alternates, each starts after a `gc.collect()` of a frozen
heap), timed in CPU time (`time.process_time`); the figure is the median of the per-round ratios (with trace /
without). On a shared 2-core machine one round's ratio scatters by a few percent (the quartiles are printed), hence
the 101 rounds (about 35 s). After its first 3 batches the trace still times every callback call (for `.times`), so
the figure is what that costs over the whole run. Target: <= 1.01.

    python bench/trace_overhead.py [--rounds 101] [--max_batches 3]
"""
import argparse, contextlib, os, statistics, sys, time

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from overhead import (N_TRAIN, N_VALID, EPOCHS, LR, WD, make_batches, make_learner,  # noqa: E402
                      timed_rounds, ratio_text)   # the same workload and rounds
from fastcb_nb.trace import EventTrace  # noqa: E402


def timed_fit(train, valid, trace=None) -> float:
    "CPU seconds of one `fit` (with `trace` among its callbacks when given)."
    learn = make_learner(train, valid)
    learn.create_opt(LR, WD)
    cbs = [trace] if trace is not None else []
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
    traces = []
    def traced_fit(train, valid):
        traces.append(EventTrace(args.max_batches))
        return timed_fit(train, valid, traces[-1])
    plain, traced = timed_rounds(timed_fit, traced_fit, args.rounds, train, valid)
    n_batches, trace = EPOCHS * N_TRAIN, traces[-1]
    diff = statistics.median(b - a for a, b in zip(plain, traced))
    print(f'fit without trace : {statistics.median(plain) / n_batches * 1e6:8.1f} us/batch (median of {args.rounds} '
          f'rounds, CPU time)')
    print(f'fit with trace    : {statistics.median(traced) / n_batches * 1e6:8.1f} us/batch '
          f'({len(trace.events)} calls recorded, {sum(trace.calls.values())} timed)')
    print(f'difference        : {diff / n_batches * 1e6:8.2f} us per training batch')
    print(f'ratio traced/plain: {ratio_text(plain, traced, digits=4)}; target <= 1.01)')

if __name__ == '__main__':
    main()

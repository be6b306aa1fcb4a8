"""What the notebook layer costs: `fit` with the live training panel against `fit` without it, and `afit` against `fit`.

Workload of `bench/overhead.py` (issue 5): MLP 8->8->2, batch 64, 200 training + 50 validation batches, 3 epochs, one
thread, batches pre-built in a list; the progress output goes to a null stream. Four runs are interleaved in every
round and timed in CPU time (`time.process_time`, one thread):

- `fit`                  : `learn.fit(3, lr)`, the baseline;
- `fit + panel`          : the same with `ShowGraph(learn, live=True)`, which draws as in a notebook (no browser is
                           needed: the widgets are created, the frames rendered to PNG and assigned to the Image
                           widget), throttled with its default `redraw_every` of 0.5 s;
- `afit`                 : `asyncio.run(learn.afit(3, lr))`, which yields to the event loop every 50 ms;
- `fit + panel, cold`    : `fit + panel` after dropping the process's shared figure, as in the first fit of a
                           session: the figure is built again and the first frame is a full draw.

Each cost is the median over rounds of the per-round difference to `fit`, as a percentage of `fit`'s median time
(the budget is 5% each). On a shared machine these differences scatter by a few percent from one invocation to the
next, so the panel is also measured from the inside: the CPU time spent in its own events (building the widgets,
the per-batch clock check, the frames, the end), which is steadier and is split into its frames (how many per
fit, and their mean time) and the rest. The cold run shows the one-off cost of a first fit (building the figure
and drawing the axes), which does not depend on the length of training.

    python bench/notebook_overhead.py [--rounds 30]
"""
import argparse, asyncio, contextlib, functools, gc, os, statistics, sys, time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, HERE)
from overhead import N_TRAIN, N_VALID, BS, EPOCHS, LR, WD, make_batches, make_learner  # noqa: E402
import fastcb_nb.widgets as widgets  # noqa: E402
from fastcb_nb.widgets import ShowGraph  # noqa: E402

FRAMES = []     # CPU seconds of each frame rendered by the panel
INSIDE = {}     # event name -> CPU seconds spent in each call of it


def _timed(cls, name: str, log: list):
    "Record the CPU time of every call of `cls.name` in `log` (the timer adds a few microseconds a call); undo."
    f = getattr(cls, name)
    @functools.wraps(f)
    def timed(*args, **kwargs):
        t0 = time.process_time()
        try: return f(*args, **kwargs)
        finally: log.append(time.process_time() - t0)
    setattr(cls, name, timed)
    return lambda: setattr(cls, name, f)


@contextlib.contextmanager
def timed_panel():
    "Time the frames and every event of `ShowGraph` (the per-batch ones are bound when a ShowGraph is built)."
    undo = [_timed(widgets._LossPlot, 'png', FRAMES)]
    for name in ('on_train_begin', '_epoch_begin', '_batch_end', '_epoch_end', 'on_train_end'):
        undo.append(_timed(ShowGraph, name, INSIDE.setdefault(name, [])))
    try: yield
    finally:
        for u in undo: u()


def run(train, valid, kind: str) -> float:
    "CPU seconds of one training run of `kind` ('fit', 'panel', 'afit', 'cold'), learner construction excluded."
    if kind == 'cold': widgets._LOSS_PLOTS.clear()
    panel = kind in ('panel', 'cold')
    learn = make_learner(train, valid, callback_fns=[functools.partial(ShowGraph, live=True)] if panel else None)
    gc.collect()                                         # no collection of the previous run's garbage in this one
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        t0 = time.process_time()
        if kind == 'afit': asyncio.run(learn.afit(EPOCHS, LR))
        else: learn.fit(EPOCHS, LR)
        return time.process_time() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    train, valid = make_batches(N_TRAIN, 1), make_batches(N_VALID, 2)
    kinds = ('fit', 'panel', 'afit', 'cold')
    for k in kinds: run(train, valid, k)                 # warm-up (imports, fonts, first figure)
    times = {k: [] for k in kinds}
    for r in range(args.rounds):
        for k in kinds[r % 4:] + kinds[:r % 4]:          # rotate the order: no run always follows the same one
            times[k].append(run(train, valid, k))
    frames, inside, batch_events = [], [], []
    with timed_panel():                                   # separate runs: the timers would add to the costs above
        for _ in range(max(args.rounds // 3, 3)):
            FRAMES.clear()
            for log in INSIDE.values(): log.clear()
            run(train, valid, 'panel')
            frames += FRAMES
            inside.append(sum(sum(log) for log in INSIDE.values()))
            batch_events += INSIDE['_batch_end']
    n_inside = max(args.rounds // 3, 3)
    n_batches = EPOCHS * N_TRAIN
    base = statistics.median(times['fit'])
    def cost(k): return statistics.median(b - a for a, b in zip(times['fit'], times[k]))
    frames_per_fit = len(frames) / n_inside
    frame_s = statistics.mean(frames) if frames else 0.
    panel, afit, cold = cost('panel'), cost('afit'), cost('cold')
    own = statistics.median(inside)
    per_batch = statistics.median(batch_events)          # a batch end without a frame: the usual case
    n_batch_events = len(batch_events) / n_inside         # training and validation batches
    rest = own - frames_per_fit * frame_s - per_batch * n_batch_events
    print(f'fit           : {base * 1e3:8.1f} ms per fit, {base / n_batches * 1e6:6.1f} us per batch '
          f'(median of {args.rounds} rounds, CPU time)')
    print(f'fit + panel   : {statistics.median(times["panel"]) * 1e3:8.1f} ms per fit')
    print(f'afit          : {statistics.median(times["afit"]) * 1e3:8.1f} ms per fit')
    print(f'panel frames  : {frames_per_fit:8.1f} per fit, {frame_s * 1e3:6.1f} ms each '
          f'(redraw_every=0.5 s; the end of training is always drawn)')
    print(f'panel, inside : {own / base * 100:8.2f} % of fit  ({own * 1e3:.1f} ms in its events: frames '
          f'{frames_per_fit * frame_s * 1e3:.1f} ms, {n_batch_events:.0f} batch ends of {per_batch * 1e6:.2f} us '
          f'(timer included), set-up and end {rest * 1e3:.1f} ms)  budget 5 %')
    print(f'panel cost    : {panel / base * 100:8.2f} % of fit  (median difference of whole runs)  budget 5 %')
    print(f'afit cost     : {afit / base * 100:8.2f} % of fit  budget 5 %')
    print(f'first fit     : {cold / base * 100:8.2f} % of fit  (panel, cold: +{(cold - panel) * 1e3:.1f} ms once per '
          f'session or change of axes)')


if __name__ == '__main__':
    main()

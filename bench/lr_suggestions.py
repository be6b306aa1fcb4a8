"""Quality of the learning-rate finder's suggestion rules: how good is `fit_one_cycle` at the suggested rate?

For each task (bench/lr_tasks.py: scikit-learn's bundled digits, breast_cancer, wine and diabetes, which load
offline, and two synthetic sets; MLPs and a BatchNorm convnet; Adam and SGD with momentum; classification and
regression):
  1. reference: `fit_one_cycle(epochs, max_lr)` from scratch at each of 12 log-spaced `max_lr` values (a fixed grid
     per task), for two data orders d (seeding the initial weights and the batch order); the reference `best` is the
     lowest final validation loss, averaged over the two data orders, on the grid;
  2. the finder: `lr_find()` with its defaults (1e-7 to 10, 100 steps, stop on divergence), twice (finder seeds
     f = 0, 1: the batch order it sees) on the initial weights of each data order d: four curves;
  3. each rule suggests a rate from each curve: the library's rules through `fastcb_nb.lr_finder.lr_suggestions`,
     exactly as `learn.recorder.suggestions()` gives them (`min_grad`, `valley`, `steep`, `min_loss` and the default,
     `DEFAULT_SUGGESTION` = `descent`), and the rejected candidates of bench/lr_rules.py on the same trimmed curve;
     the suggestion from (f, d) is trained with `fit_one_cycle` as in step 1, data order d;
  4. ratio = (loss + 0.01) / (best + 0.01), averaged over the four (f, d) runs.
A final loss that is not finite, or worse than the untrained model's, counts as the untrained model's loss.
The table has one row per rule, one column per task, then the median and the worst ratio over the tasks; the last
line gives the default rule's median and worst against the targets (median <= 1.10, worst <= 1.40).

Nothing is cached between runs; all seeds are fixed (one thread, deterministic).

    python bench/lr_suggestions.py                 # the benchmark tasks, all rules
    python bench/lr_suggestions.py --heldout       # ten other tasks, not used to choose the rule
    python bench/lr_suggestions.py --seed 1        # other data orders and finder seeds
    python bench/lr_suggestions.py --tasks digits_mlp_adam,wine_mlp_sgd --rules valley,descent
    python bench/lr_suggestions.py --valid 1       # the suggestions on lr_find(valid=1)'s validation curve
"""
import argparse, math, os, sys, time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lr_rules  # noqa: E402
import lr_tasks  # noqa: E402
from fastcb_nb.lr_finder import DEFAULT_SUGGESTION  # noqa: E402

LIBRARY_RULES = ['min_grad', 'valley', 'steep', 'min_loss', 'descent']
ALL_RULES = LIBRARY_RULES + list(lr_rules.CANDIDATES)

TARGET_MEDIAN, TARGET_WORST = 1.10, 1.40
DATA_ORDERS, FINDER_SEEDS = (0, 1), (0, 1)


def run_task(task, rules, log, seed=0, valid=False):
    "`({rule: mean ratio}, best grid loss, best grid rate)` for one task."
    data_orders = tuple(2 * seed + d for d in DATA_ORDERS)
    finder_seeds = tuple(2 * seed + f for f in FINDER_SEEDS)
    cap = task.untrained_loss()
    fits = {}

    def loss(lr, d):
        key = (float(lr), d)
        if key not in fits:
            v = task.final_loss(lr, d)
            fits[key] = v if math.isfinite(v) and v < cap else cap
        return fits[key]

    grid = np.array([[loss(lr, d) for lr in task.grid] for d in data_orders]).mean(0)
    best, best_lr = float(grid.min()), float(task.grid[int(np.argmin(grid))])
    ratios = {name: [] for name in rules}
    for d in data_orders:
        for f in finder_seeds:
            found = lr_rules.suggest(*task.finder_curve(f, d, valid), candidates=any(r in lr_rules.CANDIDATES for r in rules))
            for name in rules:
                lr = found[name]
                ratios[name].append((loss(lr, d) + 0.01) / (best + 0.01))
                log.setdefault(task.name, {}).setdefault(name, []).append(lr)
    return {k: float(np.mean(v)) for k, v in ratios.items()}, best, best_lr


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--tasks', help='comma-separated task names (default: all benchmark tasks)')
    p.add_argument('--heldout', action='store_true', help='run the held-out tasks instead')
    p.add_argument('--rules', help=f'comma-separated rules (default: all: {", ".join(ALL_RULES)})')
    p.add_argument('--valid', nargs='?', type=int, const=0, default=None, metavar='N',
                   help="run lr_find(valid=N) (all validation batches without N): suggest on the validation curve")
    p.add_argument('--seed', type=int, default=0,
                   help='another pair of data orders and finder seeds (2·seed, 2·seed+1); 0 is the reference run')
    p.add_argument('--verbose', action='store_true', help='also print each task reference and the suggested rates')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pool = lr_tasks.HELDOUT if args.heldout else lr_tasks.TASKS
    if args.tasks:
        every = {t.name: t for t in lr_tasks.TASKS + lr_tasks.HELDOUT}
        pool = [every[n] for n in args.tasks.split(',')]
    rules = args.rules.split(',') if args.rules else ALL_RULES
    for r in rules:
        if r not in ALL_RULES: p.error(f'unknown rule {r!r}')
    valid = False if args.valid is None else (args.valid or True)
    t0 = time.time()
    table, log = {}, {}
    for task in pool:
        t = time.time()
        table[task.name], best, best_lr = run_task(task, rules, log, args.seed, valid)
        if args.verbose:
            print(f'{task.name}: best {best:.4f} at max_lr {best_lr:.3g} ({time.time() - t:.1f}s)', flush=True)
            for name in rules: print(f'    {name:14s}', ' '.join(f'{v:.3g}' for v in log[task.name][name]))
    names = [t.name for t in pool]
    w = max(len(n) for n in rules) + 1
    short = [n.replace('_mlp', '').replace('digits_', 'dg_') for n in names]
    cw = max(7, max(len(s) for s in short) + 1)
    print(f'{"rule":{w}s}' + ''.join(f'{s:>{cw}s}' for s in short) + f'{"median":>8s}{"worst":>8s}')
    summary = {}
    for r in rules:
        v = np.array([table[n][r] for n in names])
        summary[r] = float(np.median(v)), float(v.max())
        mark = ' *' if r == DEFAULT_SUGGESTION else ''
        print(f'{r:{w}s}' + ''.join(f'{x:{cw}.2f}' for x in v) + f'{summary[r][0]:8.2f}{summary[r][1]:8.2f}{mark}')
    print(f'({len(names)} tasks, {time.time() - t0:.0f}s; ratio = (loss + 0.01) / (best of grid + 0.01), '
          f'mean of 2 finder runs x 2 data orders; * = default'
          f'{"" if valid is False else f"; lr_find(valid={valid!r})"})')
    if DEFAULT_SUGGESTION in summary:
        med, worst = summary[DEFAULT_SUGGESTION]
        ok = med <= TARGET_MEDIAN and worst <= TARGET_WORST
        print(f'default rule {DEFAULT_SUGGESTION!r}: median {med:.3f} (target <= {TARGET_MEDIAN}), worst {worst:.3f} '
              f'(target <= {TARGET_WORST}): {"meets" if ok else "MISSES"} the targets')
    return summary


if __name__ == '__main__':
    main()

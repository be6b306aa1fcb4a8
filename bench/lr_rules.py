"""Candidate learning-rate suggestion rules that the library does not ship, kept for the benchmark's comparison.

The library's rules (`min_grad`, `valley`, `steep`, `min_loss` and the default, `descent`) live in
`fastcb_nb.lr_finder` and are measured through `lr_suggestions`, exactly as users get them. The candidates below were
measured while choosing the default (see `bench/LR_RULES.md`); each is a pure function `rule(lrs, losses) -> lr` of
the curve as `lr_suggestions` prepares it (`fastcb_nb.lr_finder.prepare_trace`: the rates and smoothed losses
recorded by `lr_find`, without the first `skip_start=10` and the last `skip_end=5` points, cut at the first
non-finite loss), built on the library's own helpers:

* `min_loss_div4`: the rate at the minimum / 4 (a fixed fraction of the minimum's rate);
* `steep_smooth`: steepest descent per decade of the smoothed curve, searched up to its minimum;
* `first_drop`: the first rate (from the left) at which 70% of the drop is covered, / 1.5;
* `geo_mid`: between the middle of the descent and the minimum;
* `descent50`: `descent` at half of the drop;
* `descent_anymin`: `descent` with the minimum searched over the whole curve, first decade included.

`python bench/lr_rules.py` runs their self-test.
"""
import os, sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from fastcb_nb.lr_finder import (prepare_trace, descent_lr, lr_suggestions, DEFAULT_SUGGESTION,  # noqa: E402
                                 _running_mean, _descent_levels, _crossing)

__all__ = ['CANDIDATES', 'suggest']


def _clip(lr, lrs) -> float: return float(min(max(lr, lrs[0]), lrs[-1]))


def min_loss_div(lrs, losses, div: float = 4.) -> float:
    "`lr_min / div`: the EMA lags, so the minimum sits past the best rate by an amount a fixed `div` ignores."
    return _clip(lrs[int(np.argmin(losses))] / div, lrs)


def steep_smooth(lrs, losses, width: float = 0.5) -> float:
    "Steepest descent per decade of lr of the curve smoothed over `width` decades, up to its minimum."
    if len(losses) < 3: return min_loss_div(lrs, losses, 10.)
    lx = np.maximum.accumulate(np.log10(lrs))
    ss = _running_mean(losses, lx, width)
    i = int(np.argmin(ss))
    if i < 2: return min_loss_div(lrs, losses, 10.)
    with np.errstate(divide='ignore', invalid='ignore'):
        g = np.gradient(ss[:i + 1], lx[:i + 1])
    g[~np.isfinite(g)] = np.inf
    return _clip(lrs[int(np.argmin(g))], lrs)


def first_drop(lrs, losses, frac: float = 0.7, div: float = 1.5, width: float = 0.25) -> float:
    "The first rate (from the left) at which the smoothed loss has covered `frac` of its drop, / `div`."
    lx, ss, i, l0 = _descent_levels(lrs, losses, width)
    if not l0 > ss[i]: return min_loss_div(lrs, losses, 10.)
    j = int(np.argmax(ss[:i + 1] <= l0 - frac * (l0 - ss[i])))
    return _clip(lrs[j] / div, lrs)


def geo_mid(lrs, losses, frac: float = 0.5, div: float = 1.5, width: float = 0.25) -> float:
    "Geometric mean of the rate at `frac` of the final descent (as in `descent`) and the minimum's, / `div`."
    lx, ss, i, l0 = _descent_levels(lrs, losses, width)
    if not l0 > ss[i]: return min_loss_div(lrs, losses, 10.)
    x = _crossing(lx, ss, i, ss[i] + (1 - frac) * (l0 - ss[i]))
    return _clip(10 ** ((x + lx[i]) / 2) / div, lrs)


CANDIDATES = {'min_loss_div4': min_loss_div, 'steep_smooth': steep_smooth, 'first_drop': first_drop,
              'geo_mid': geo_mid, 'descent50': lambda lrs, losses: descent_lr(lrs, losses, frac=0.5),
              'descent_anymin': lambda lrs, losses: descent_lr(lrs, losses, min_after_start=False)}


def suggest(lrs, losses, candidates=True) -> dict:
    "`{name: lr}`: the library's rules (`lr_suggestions`, default skips), then the candidates on the same prepared curve."
    out = lr_suggestions(lrs, losses)
    if candidates:
        pl, pv = prepare_trace(lrs, losses)
        out.update({name: float(rule(pl, pv)) for name, rule in CANDIDATES.items()})
    return out


if __name__ == '__main__':
    # Self-test on synthetic curves: python bench/lr_rules.py
    lrs = np.logspace(-7, 1, 100, endpoint=False)
    lx = np.log10(lrs)
    rng = np.random.default_rng(0)

    def curve(center=-2., width=1.5, top=2.3, bottom=0.5, noise=0.):
        y = bottom + (top - bottom) / (1 + np.exp((lx - center) / (width / 4)))
        y = y + np.where(lx > center + width, 20 * (lx - center - width) ** 2, 0.)
        return y + noise * rng.standard_normal(len(lx))

    for y in (curve(), curve(noise=0.05), curve(center=-4, noise=0.1), np.ones(100), np.linspace(1, 3, 100),
              2 - lx / 10, np.r_[curve()[:70], np.full(30, np.nan)]):
        s = suggest(lrs, y)
        pl, _ = prepare_trace(lrs, y)
        assert set(s) == {'min_grad', 'valley', 'steep', 'min_loss', 'descent', *CANDIDATES}, s
        for name, r in s.items():
            assert np.isfinite(r), (name, r)
            if name != 'min_loss': assert pl[0] <= r <= pl[-1], (name, r)   # min_loss (v1's /10) may leave the range
    ydip = curve(); ydip[12:16] = 0.3               # a low point in the first recorded decade (after the skips)
    assert suggest(lrs, ydip)['descent_anymin'] < 1e-5 < suggest(lrs, ydip)['descent']
    assert DEFAULT_SUGGESTION in lr_suggestions(lrs, curve())
    print('lr_rules self-test passed')

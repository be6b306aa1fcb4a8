"""The overhead benchmarks of bench/ still run: one round each, in a fresh interpreter, and they print their ratios.

They are not timed here (a shared machine's speed says nothing in one round): this only keeps the scripts that
the closing notes quote in working order."""
import os, re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RATIO = re.compile(r'ratio[^:]*:\s+(\d+\.\d+) \(median of the per-round ratios')

BENCHES = [('overhead.py', ['--rounds', '1'], 1), ('schedule_overhead.py', ['--rounds', '1', '--lr-find-rounds', '2'], 3),
           ('trace_overhead.py', ['--rounds', '1'], 1)]


@pytest.mark.parametrize('script,args,n_ratios', BENCHES, ids=[b[0] for b in BENCHES])
def test_benchmark_runs_and_prints_its_ratios(script, args, n_ratios):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, str(ROOT / 'bench' / script), *args], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ratios = [float(x) for x in RATIO.findall(r.stdout)]
    assert len(ratios) == n_ratios, r.stdout
    assert all(0.2 < x < 5 for x in ratios), r.stdout     # a ratio of two timings of the same work, not garbage

"""The demo: `main([...])` in-process, `python -m fastcb_nb.demo` and the `fastcb-demo` console script in a plain
terminal (a subprocess without a notebook)."""
import contextlib, io, os, re, shutil, subprocess, sys

import pytest

from fastcb_nb.demo import main, run_demo

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
FILES = ['losses.png', 'lr_find.png', 'schedule.png']


def check_pngs(folder):
    assert sorted(os.listdir(folder)) == FILES
    for name in FILES:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name


def check_each_said_once(text, folder):
    "Each suggestion's name and each saved file are printed once (not again by `Recorder.plot(suggestion=True)`)."
    for name in ['min_grad', 'valley', 'steep', 'min_loss', 'descent']: assert text.count(name) == 1, (name, text)
    assert 'Min numerical gradient' not in text and 'Min loss divided by 10' not in text
    for name in FILES: assert text.count(name) == 1, (name, text)
    listed = text[text.index(f'Plots saved in {folder.resolve()}:'):].splitlines()[1:]
    assert [l.split()[0] for l in listed] == ['lr_find.png', 'losses.png', 'schedule.png'], listed


def test_coinciding_suggestions_share_a_labelled_marker(tmp_path):
    from fastcb_nb.demo import lr_find_figure
    with contextlib.redirect_stdout(io.StringIO()): res = run_demo(tmp_path, epochs=1)
    rec, sugg = res['learn'].lr_find_recorder, dict(res['suggestions'])
    sugg['steep'] = sugg['min_grad']                                   # two suggestions at one rate
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): fig = lr_find_figure(rec, sugg, pick='steep')
    assert buf.getvalue() == ''                                        # drawing prints nothing
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"min_grad = steep: {sugg['min_grad']:.2e} (used)" in labels, labels
    assert all(sum(name in l for l in labels) == 1 for name in sugg), labels      # each name in one entry
    markers = [l for l in ax.get_lines() if l.get_marker() not in (None, 'None', '')]
    assert len(markers) == len(labels) and len({l.get_marker() for l in markers}) == len(markers)
    assert sorted(t.get_text() for t in ax.texts) == sorted(l.split(':')[0] for l in labels)   # names at the points
    assert not [l for l in ax.get_lines() if l.get_color() == 'red']               # no unlabelled v1 circle


def test_main_trains_and_saves_plots(tmp_path):
    out = tmp_path / 'plots'
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): assert main(['--out', str(out), '--epochs', '2', '--seed', '1']) == 0
    text = buf.getvalue()
    check_pngs(out)
    assert f'Plots saved in {out.resolve()}' in text
    m = re.search(r'Suggested learning rates: min_grad (\S+), valley (\S+), steep (\S+), min_loss (\S+), '
                  r'descent (\S+) \(used\)\n', text)
    assert m and all(float(v) > 0 for v in m.groups())
    assert f'fit_one_cycle(2, max_lr={m.group(5)})' in text                      # trained at the default rule's rate
    check_each_said_once(text, out)
    m = re.search(r'train loss (\S+) -> (\S+), valid loss (\S+), accuracy (\S+)', text)
    first, last, valid, acc = map(float, m.groups())
    assert last < first and valid < 0.5 and acc > 0.9


def test_run_demo_result(tmp_path):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): res = run_demo(tmp_path, epochs=1, pick='min_grad')
    check_pngs(tmp_path)
    learn = res['learn']
    assert res['lr'] == res['suggestions']['min_grad'] == learn.lr_find_recorder.suggestions()['min_grad']
    assert max(learn.recorder.lrs) == pytest.approx(res['lr'], rel=1e-12)        # one-cycle peak = picked rate
    assert res['valid_loss'] == learn.recorder.val_losses[-1] and len(learn.recorder.nb_batches) == 1
    with pytest.raises(ValueError, match='pick'): run_demo(tmp_path, pick='best')
    with pytest.raises(ValueError, match='epochs'): run_demo(tmp_path, epochs=0)


def test_bad_command_line():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e: main(['--epochs', '0'])
    assert e.value.code == 2 and '--epochs must be >= 1' in err.getvalue()
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as e: main(['--epochs', 'two'])
    assert e.value.code == 2


def _terminal_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(('JPY_', 'IPY', 'MPLBACKEND'))}
    env['PYTHONPATH'] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return env


def test_python_m_in_a_terminal(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'fastcb_nb.demo', '--out', str(tmp_path / 'o'), '--epochs', '1'],
                       capture_output=True, text=True, timeout=120, env=_terminal_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    check_pngs(tmp_path / 'o')
    assert 'Plots saved in' in r.stdout and 'accuracy' in r.stdout
    check_each_said_once(r.stdout, tmp_path / 'o')


@pytest.mark.skipif(shutil.which('fastcb-demo') is None, reason='console script not installed')
def test_console_script_default_folder(tmp_path):
    r = subprocess.run(['fastcb-demo', '--epochs', '1', '--seed', '3'], capture_output=True, text=True, timeout=120,
                       env=_terminal_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    check_pngs(tmp_path / 'fastcb_demo_output')                                   # --out's default, in the cwd

"""Every ```python block of README.md runs as pasted.

- A block whose first line is `# in a notebook cell` is a notebook cell: those blocks run, in order, as the
  consecutive cells of one notebook in a real kernel (nbclient), and each must show one widget.
- A block whose first line is `# <name>.py...` is a script: it is saved as <name>.py and run with plain `python`.
- Any other block runs alone in a fresh interpreter.

Each runs in its own temporary folder, with MPLBACKEND=Agg and this checkout first on the import path."""
import os, re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_CELL = '# in a notebook cell'
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'


def python_blocks(text: str) -> list:
    "The code of every ```python fenced block of `text`, in order."
    return [m.group(1) for m in re.finditer(r'^```python\n(.*?)^```$', text, re.M | re.S)]


BLOCKS = python_blocks((ROOT / 'README.md').read_text())
CELLS = [b for b in BLOCKS if b.startswith(NOTEBOOK_CELL)]
SCRIPT = re.compile(r'^# (\w+\.py)\b')
OTHERS = [b for b in BLOCKS if not b.startswith(NOTEBOOK_CELL)]


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(('JPY_', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK'))}
    env.update(MPLBACKEND='Agg', PYTHONPATH=str(ROOT) + os.pathsep + env.get('PYTHONPATH', ''))
    return env


def _name(block: str) -> str:
    m = SCRIPT.match(block)
    return m.group(1) if m else 'block.py'


def test_the_readme_has_the_blocks_this_test_expects():
    assert len(BLOCKS) == len(CELLS) + len(OTHERS) and len(OTHERS) >= 4 and len(CELLS) == 3
    assert [_name(b) for b in OTHERS].count('train.py') == 1


@pytest.mark.parametrize('block', OTHERS, ids=[f'{i}-{_name(b)}' for i, b in enumerate(OTHERS)])
def test_block_runs_alone_in_a_fresh_interpreter(block, tmp_path):
    path = tmp_path / _name(block)
    path.write_text(block)
    r = subprocess.run([sys.executable, path.name], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, f'{path.name} failed:\n{block}\n--- stderr:\n{r.stderr[-3000:]}'
    if path.name == 'train.py':
        assert (tmp_path / 'models' / 'final.pth').exists()
        assert 'trains alone' in r.stderr                     # to_distributed says so without torchrun


def test_notebook_blocks_run_as_the_cells_of_one_notebook(tmp_path):
    nbformat = pytest.importorskip('nbformat')
    nbclient = pytest.importorskip('nbclient')
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    shown = [0] * len(CELLS)                  # widget views displayed by each cell, as the front end saw them

    class Client(nbclient.NotebookClient):
        def process_message(self, msg, cell, cell_index):
            if msg['msg_type'] in ('display_data', 'execute_result') and WIDGET_VIEW in msg['content'].get('data', {}):
                shown[cell_index] += 1
            return super().process_message(msg, cell, cell_index)

    Client(nb, timeout=180, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}).execute(env=_env())
    errors = [(i, o.get('ename'), o.get('evalue')) for i, c in enumerate(nb.cells) for o in c.outputs
              if o.output_type == 'error']
    assert errors == []
    # the picker, the preview and the live panel (which becomes a picture when training ends): one widget each
    assert shown == [1] * len(CELLS), shown
    assert WIDGET_VIEW in nb.cells[0].outputs[-1].get('data', {})          # the picker stays a widget

"""`learn.show_callbacks()` and `%callbacks` in Chromium, in JupyterLab and in Notebook 7 (issue 15): the HTML table
renders as a real table (rows and cells in the DOM), one row per call the table lists plus one per event that calls
nothing, in the order and with the names the Python object holds.

The module writes a small notebook into the server's folder (a copy: nothing under nbs/ changes), runs it with Run
All, and compares the DOM with the same table built here, in the test process, for an identical learner."""
import json

import pytest
import nbformat

from lab_page import error_outputs

NOTEBOOK = 'callbacks_table.ipynb'
SETUP = """from fastcb_nb.all import *
from fastcb_nb.testing import tiny_learner

def make_learner():
    learn = tiny_learner(metrics=[accuracy], silent=True)
    learn.callbacks.append(EarlyStoppingCallback(learn))
    return learn, [EventTrace(), TerminateOnNaNCallback()]"""
SHOW = "learn, extra = make_learner()\nlearn.show_callbacks(extra)"
MAGIC = "%load_ext fastcb_nb\nmore = extra\n%callbacks learn more"


def expected_table():
    "The table the notebook shows, built here from the same code."
    namespace = {}
    exec(SETUP, namespace)
    learn, extra = namespace['make_learner']()
    return learn.show_callbacks(extra)


@pytest.fixture(scope='module')
def shown(open_notebook, server_root):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in (SETUP, SHOW, MAGIC)])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    (server_root / NOTEBOOK).write_text(json.dumps(nb))
    page = open_notebook(NOTEBOOK)
    page.run_all()
    page.wait_idle(timeout=90)
    page.screenshot('callbacks-01-after-run-all')
    return page


def dom_rows(page, index: int) -> list:
    "The text of every cell of every body row of the table in cell `index`'s output."
    table = page.cell(index).locator('.jp-OutputArea-output table')
    assert table.count() == 1, f'cell {index} shows {table.count()} tables'
    return table.first.evaluate(
        "t => [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(c => c.textContent))")


@pytest.mark.parametrize('index', [1, 2], ids=['show_callbacks', 'magic'])
def test_the_html_table_renders_with_one_row_per_call(shown, page, index):
    table = expected_table()
    rows = dom_rows(shown, index)
    empty = [e for e in ('on_train_begin', 'on_epoch_begin', 'on_batch_begin', 'on_loss_begin', 'on_backward_begin',
                         'on_backward_end', 'on_step_end', 'on_batch_end', 'on_epoch_end', 'on_train_end')
             if not table.calls(e)]
    assert len(rows) == len(table.rows) + len(empty) and all(len(r) == 7 for r in rows), rows
    # the events, numbered 1..10 in loop order, each on the first row of its calls
    assert [(r[0], r[1]) for r in rows if r[0]] == [(str(i), e) for i, e in enumerate(
        ['on_train_begin', 'on_epoch_begin', 'on_batch_begin', 'on_loss_begin', 'on_backward_begin', 'on_backward_end',
         'on_step_end', 'on_batch_end', 'on_epoch_end', 'on_train_end'], 1)]
    # the calls, in order, with their kind, _order and source
    calls = [r for r in rows if r[3] != '(nothing)']
    assert [(r[2], r[3], r[4], r[5]) for r in calls] == \
        [(t['kind'], t['name'], str(t['order']), t['source']) for t in table.rows]
    assert {'EarlyStoppingCallback', 'EventTrace', 'TerminateOnNaNCallback', 'Recorder', 'accuracy'} <= {r[3] for r in calls}
    header = shown.cell(index).locator('.jp-OutputArea-output table thead th').all_inner_texts()
    assert header == ['#', 'event', 'kind', 'name', '_order', 'source', 'when']
    shown.screenshot(f'callbacks-02-table-cell-{index}', shown.cell(index))


def test_no_errors_and_no_text_fallback(shown, page):
    assert error_outputs(shown.model_outputs()) == []
    for index in (1, 2):      # the rich display won: the text table's dashes are not what the page shows
        assert not any('-----' in t for t in shown.outputs(index)), shown.outputs(index)
    assert shown.page_errors(page.errors) == []

"""The tutorial notebook (nbs/10_tutorial.ipynb) in Chromium, in JupyterLab and in Notebook 7: what a person sees
and clicks. Every test runs once per front end (the `frontend` fixture of conftest.py); the page driver (`nb`)
hides what differs between them.

For each front end, the module runs the notebook once with Run All. While it runs, the live panels of the
synchronous fit and of the long `await learn.afit_one_cycle(...)` are sampled, and the long fit's Stop button is
clicked. Once the kernel is idle the picker is used (widgets answer only then), and the long fit is run once more on
its own and stopped. The tests run in file order and share that notebook (one copy per front end, each with its
own kernel).
"""
import re, time
from types import SimpleNamespace

import pytest

from lab_page import error_outputs

NOTEBOOK = '10_tutorial.ipynb'
PANEL_IMAGE, STOP = '.fcb-panel-image', '.fcb-stop'
AFTER_STOP = r'after stop: trained (\d+) of (\d+) batches'


def find_cells(nb) -> dict:
    "Indices of the cells the tests act on, found by their code."
    return dict(picker=nb.find_cell('picker = %lr_find'),
                chosen=nb.find_cell('print(f"chosen lr: {learn.lr}")', exact=True),
                fit=nb.find_cell('%fit_one_cycle 3', exact=True),
                long=nb.find_cell('await learn.afit_one_cycle'),
                after=nb.find_cell('print(f"after stop'),
                end=nb.find_cell('print("the end")'))


def sample_panels_and_stop(nb, watch: dict, stop_cell: int, min_frames: int = 4, timeout: float = 120,
                           shot: str = None) -> SimpleNamespace:
    """Sample the panel image of each cell in `watch` (name -> index) every ~50 ms; once the panel of `stop_cell`
    has shown `min_frames` distinct images, click its Stop button. Returns the distinct srcs per name and the
    click's time."""
    frames = {name: [] for name in watch}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, i in watch.items():
            src = nb.src(i, PANEL_IMAGE)
            if src and src not in frames[name]: frames[name].append(src)
        stop_frames = frames[next(n for n, i in watch.items() if i == stop_cell)]
        if len(stop_frames) >= min_frames:
            button = nb.cell(stop_cell).locator(STOP)
            if shot:
                try: nb.screenshot(shot, nb.cell(stop_cell).locator('.fcb-panel'))
                except Exception: pass       # best effort: the panel keeps changing
            enabled = button.is_enabled()
            button.click()
            clicked = time.monotonic()
            seen = wait_stop_seen(nb, stop_cell, clicked, timeout=5)
            clicks = 1
            if seen['status'] == 'still running':
                # a person whose click shows nothing clicks again; the note in the message says it happened
                try: button.click(timeout=5000)
                except Exception: pass           # disabled meanwhile: the first click was taken after all
                clicks, seen = 2, wait_stop_seen(nb, stop_cell, time.monotonic())
            return SimpleNamespace(frames=frames, clicked=clicked, enabled=enabled, clicks=clicks, **seen)
        time.sleep(0.05)
    raise TimeoutError(f'the long fit showed {len(stop_frames)} distinct panel images in {timeout} s; '
                       f'frames seen: { {n: len(f) for n, f in frames.items()} }')


def wait_stop_seen(nb, index: int, clicked: float, timeout: float = 20) -> dict:
    """After a click on Stop: wait until the panel's status line of cell `index` says the kernel took it
    ("Stopping..." or "Stopped..."), or the panel is gone (the run ended). Returns the status seen and how long
    after the click it came (`seen_after`), for the assertions' messages."""
    status = nb.cell(index).locator('.fcb-panel-status')
    deadline = clicked + timeout
    while time.monotonic() < deadline:
        try: text = status.inner_text(timeout=1000) if status.count() >= 1 else '(no panel)'
        except Exception: text = '(no panel)'
        if 'Stopp' in text or text == '(no panel)': return dict(status=text, seen_after=time.monotonic() - clicked)
        time.sleep(0.05)
    return dict(status='still running', seen_after=time.monotonic() - clicked)


def wait_count_above(nb, index: int, previous, timeout: float = 60) -> float:
    "Wait until cell `index` has an execution count above `previous`; return when that happened (monotonic)."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = nb.execution_counts()[index]
        if count is not None and (previous is None or count > previous): return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f'cell {index} did not run again within {timeout} s')


@pytest.fixture(scope='module')
def tutorial(open_notebook):
    nb = open_notebook(NOTEBOOK)
    nb.screenshot('01_opened')
    cells = find_cells(nb)
    nb.run_all()
    stop = sample_panels_and_stop(nb, {'fit': cells['fit'], 'long': cells['long']}, cells['long'],
                                  shot='02_live_panel_during_long_fit')
    after_ran = wait_count_above(nb, cells['after'], None)
    nb.wait_idle(timeout=120)
    nb.screenshot('03_after_run_all')
    return SimpleNamespace(nb=nb, cells=cells, stop=stop, stop_to_after=after_ran - stop.clicked,
                           counts=nb.execution_counts())


def test_run_all_runs_every_cell_in_order_without_errors(tutorial, page):
    nb, counts = tutorial.nb, tutorial.counts
    kinds = [kind for kind, _ in nb.sources()]
    code_counts = [c for kind, c in zip(kinds, counts) if kind == 'code']
    assert None not in code_counts, f'cells that did not run: {counts}'
    assert code_counts == sorted(code_counts) and len(set(code_counts)) == len(code_counts), code_counts
    assert error_outputs(nb.model_outputs()) == []
    texts = [t for i, kind in enumerate(kinds) if kind == 'code' for t in nb.outputs(i)]
    assert not [t for t in texts if 'Traceback' in t or re.search(r'\w+Error: ', t)]
    assert any('the end' in t for t in nb.outputs(tutorial.cells['end']))
    assert nb.page_errors(page.errors) == []


def test_live_panel_shows_several_frames_while_training(tutorial):
    frames = tutorial.stop.frames
    # the long fit: Stop is clicked only after 4 distinct images arrived while it ran
    assert len(frames['long']) >= 4
    # the synchronous %fit_one_cycle 3: its panel is replaced by a static picture when it ends, so every image
    # sampled from it arrived while it was training (the blank first image plus at least one plot)
    assert len(frames['fit']) >= 2, frames['fit']


def test_stop_ends_the_long_fit_and_the_later_cells_run_after_it(tutorial):
    nb, cells, counts = tutorial.nb, tutorial.cells, tutorial.counts
    assert tutorial.stop.enabled
    assert any('Stopped with the Stop button' in t for t in nb.outputs(cells['long'])), nb.outputs(cells['long'])
    done, total = map(int, re.search(AFTER_STOP, nb.wait_output(cells['after'], AFTER_STOP)).groups())
    stop = tutorial.stop
    assert 0 < done < total, (done, total, stop.status, f'{stop.seen_after:.2f} s after click {stop.clicks}')
    assert counts[cells['long']] < counts[cells['after']] < counts[cells['end']]
    assert tutorial.stop_to_after < 15, f'the cells after the long fit ran {tutorial.stop_to_after:.1f} s after Stop'


def test_picker_slider_is_a_real_slider(tutorial):
    nb, picker = tutorial.nb, tutorial.nb.cell(tutorial.cells['picker'])
    assert picker.locator('.fcb-picker .widget-slider .noUi-handle').count() == 1
    assert picker.locator('.fcb-picker .widget-slider .widget-readout').count() == 1
    assert picker.locator('img.fcb-picker-image[src]').count() == 1
    assert picker.locator('.fcb-use-lr').count() == 1 and picker.locator('[class*="fcb-suggest-"]').count() == 4
    assert not any('FloatLogSlider(' in t or 'LRFinderPicker' in t for t in nb.outputs(tutorial.cells['picker']))


def test_dragging_the_slider_redraws_the_plot(tutorial):
    nb, picker = tutorial.nb, tutorial.nb.cell(tutorial.cells['picker'])
    image, readout = picker.locator('img.fcb-picker-image'), picker.locator('.widget-readout')
    picker.scroll_into_view_if_needed()
    src_before, readout_before = image.get_attribute('src'), readout.inner_text()
    pixels_before = image.screenshot(path=str(nb.artifact('04_picker_before_drag.png')))
    nb.drag(picker.locator('.noUi-handle'), -120)
    deadline = time.monotonic() + 15
    while image.get_attribute('src') == src_before and time.monotonic() < deadline: time.sleep(0.05)
    assert image.get_attribute('src') != src_before, 'the plot was not redrawn after the drag'
    assert readout.inner_text() != readout_before
    time.sleep(0.3)                                       # let the new image paint before comparing pixels
    pixels_after = image.screenshot(path=str(nb.artifact('05_picker_after_drag.png')))
    assert pixels_after != pixels_before


def _lr_in(text: str) -> float:
    return float(re.search(r'(\d+(?:\.\d+)?e[+-]?\d+)', text).group(1))


def test_use_this_lr_sets_learn_lr_for_later_cells(tutorial):
    nb, cells = tutorial.nb, tutorial.cells
    picker = nb.cell(cells['picker'])
    shown = _lr_in(picker.locator('.widget-readout').inner_text())
    picker.locator('.fcb-use-lr').click()
    status = picker.locator('.fcb-picker-status')
    deadline = time.monotonic() + 15
    while 'learn.lr' not in status.inner_text() and time.monotonic() < deadline: time.sleep(0.05)
    assert abs(_lr_in(status.inner_text()) / shown - 1) < 0.01, status.inner_text()
    nb.run_cell(cells['chosen'])
    text = nb.wait_output(cells['chosen'], r'chosen lr: \d')
    nb.wait_idle()
    nb.screenshot('06_chosen_lr', nb.cell(cells['chosen']))
    chosen = float(re.search(r'chosen lr: (\S+)', text).group(1))
    assert abs(chosen / shown - 1) < 0.01, (chosen, shown)      # the readout shows 3 significant digits


def test_suggestion_button_moves_the_slider(tutorial):
    nb, picker = tutorial.nb, tutorial.nb.cell(tutorial.cells['picker'])
    button, readout = picker.locator('.fcb-suggest-min_loss'), picker.locator('.widget-readout')
    target = _lr_in(button.inner_text())
    assert abs(_lr_in(readout.inner_text()) / target - 1) > 0.2        # the drag left the slider far from it
    button.click()
    # the handle snaps to the slider's grid: 200 steps over the explored range (~8 decades), half a step ~ 5 %
    deadline = time.monotonic() + 15
    while abs(_lr_in(readout.inner_text()) / target - 1) > 0.06 and time.monotonic() < deadline: time.sleep(0.05)
    assert abs(_lr_in(readout.inner_text()) / target - 1) <= 0.06, (readout.inner_text(), target)


def test_stop_when_the_long_fit_runs_on_its_own(tutorial):
    "Run the long-fit cell and the cells below it again, click Stop, and check they ran after it, in order."
    nb, cells = tutorial.nb, tutorial.cells
    before = nb.execution_counts()
    nb.run_from(cells['long'])
    stop = sample_panels_and_stop(nb, {'long': cells['long']}, cells['long'], min_frames=3,
                                  shot='07_live_panel_run_alone')
    wait_count_above(nb, cells['end'], before[cells['end']])
    nb.wait_idle(timeout=60)
    nb.screenshot('08_after_stop_run_alone')
    counts = nb.execution_counts()
    assert before[cells['end']] < counts[cells['long']] < counts[cells['after']] < counts[cells['end']]
    assert counts[cells['fit']] == before[cells['fit']]                     # nothing above it ran again
    done, total = map(int, re.search(AFTER_STOP, nb.wait_output(cells['after'], AFTER_STOP)).groups())
    assert stop.enabled and 0 < done < total, (done, total, stop.status, f'{stop.seen_after:.2f} s after click {stop.clicks}')
    assert error_outputs(nb.model_outputs()) == []

"""The notebook layer without a browser (issue 5): the live training panel (ShowGraph), the lr-finder picker and the
one-cycle preview, driven from Python by setting slider values and clicking buttons. Runs with ipywidgets 7.7 and 8."""
import asyncio, functools, math

import numpy as np
import pytest
import ipywidgets as W

from conftest import quiet
import fastcb_nb.widgets as wmod
import fastcb_nb.canvas as canvas_mod, fastcb_nb.panel as panel_mod
import fastcb_nb.picker as picker_mod, fastcb_nb.preview as preview_mod, fastcb_nb.progress as progress_mod
from fastcb_nb.core import defaults
from fastcb_nb.callback import Callback, CallbackHandler
from fastcb_nb.learner import Learner, synthetic_data, CrossEntropyFlat
from fastcb_nb.widgets import ShowGraph, TrainingPanel, LRFinderPicker, OneCyclePreview, default_max_lr

PNG = b'\x89PNG\r\n\x1a\n'
LIVE = functools.partial(ShowGraph, live=True)


def png_size(data: bytes) -> tuple:
    "(width, height) from a PNG header."
    assert bytes(data[:8]) == PNG
    return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')


class ClickStop(Callback):
    "Click the live panel's Stop button at training iteration `at` (or validation batch `val_at` of epoch 0)."
    def __init__(self, learn, at=None, val_at=None):
        self.learn, self.at, self.val_at, self.exception, self.n_val = learn, at, val_at, 'not called', 0
    def on_batch_end(self, iteration, train, **kwargs):
        if train and iteration == self.at: self.learn.show_graph.panel.stop_button.click()
        if not train:
            if self.n_val == self.val_at: self.learn.show_graph.panel.stop_button.click()
            self.n_val += 1
    def on_train_end(self, exception, **kwargs): self.exception = exception


class Raise(Callback):
    def __init__(self, exc, at): self.exc, self.at = exc, at
    def on_batch_end(self, iteration, train, **kwargs):
        if train and iteration == self.at: raise self.exc


@pytest.fixture
def count_widgets(monkeypatch):
    "Count the ipywidgets created (every widget opens its comm in __init__)."
    opened = []
    orig = W.Widget.open
    def counting(self, *a, **k):
        opened.append(type(self).__name__)
        return orig(self, *a, **k)
    monkeypatch.setattr(W.Widget, 'open', counting)
    return opened


@pytest.fixture
def count_frames(monkeypatch):
    "Count the figures built and the frames rendered by the widgets module."
    counts = {'figures': 0, 'frames': 0}
    monkeypatch.setattr(panel_mod, '_LOSS_PLOTS', {})                  # the figures are shared: start without any
    orig_init, orig_png = canvas_mod.Canvas.__init__, canvas_mod.Canvas.png
    def init(self, *a, **k):
        counts['figures'] += 1
        orig_init(self, *a, **k)
    def png(self, *a, **k):
        counts['frames'] += 1
        return orig_png(self, *a, **k)
    monkeypatch.setattr(canvas_mod.Canvas, '__init__', init)
    monkeypatch.setattr(canvas_mod.Canvas, 'png', png)
    return counts


@pytest.fixture
def notebook_bars(monkeypatch):
    "Make the training loop use fastprogress's notebook bars, and fail if they display anything themselves."
    from fastprogress import fastprogress as fp
    from IPython.display import HTML
    def no_display(*a, **k): raise AssertionError('fastprogress displayed its own output')
    monkeypatch.setattr(fp, 'HTML', HTML, raising=False)
    monkeypatch.setattr(fp, 'display', no_display, raising=False)
    monkeypatch.setattr(progress_mod, 'progress_kind', lambda stream=None: 'notebook')   # decided at every fit


@pytest.fixture
def fake_kernel(monkeypatch):
    "Pretend to be in a Jupyter kernel: record what would be displayed, and updates of display handles."
    shown = []
    class Handle:
        def __init__(self, obj): self.obj = obj
        def update(self, obj): shown.append(('update', obj))
    def display(obj, display_id=False):
        shown.append(('display', obj))
        return Handle(obj) if display_id else None
    import IPython.display
    for mod in (canvas_mod, panel_mod, picker_mod, preview_mod):   # each widget module's own names
        monkeypatch.setattr(mod, 'in_ipython_kernel', lambda: True)
        monkeypatch.setattr(mod, 'display_in_notebook', display)
    monkeypatch.setattr(IPython.display, 'display', lambda obj: shown.append(('display', obj)))
    return shown


# -- ShowGraph / TrainingPanel -----------------------------------------------------------------------------------

def test_script_mode_creates_nothing(make_learner, count_widgets, count_frames):
    learn = make_learner(callback_fns=ShowGraph)
    with quiet(): learn.fit(2, 1e-2)
    sg = learn.show_graph
    assert not sg.live and sg.panel is None and sg.png is None
    assert count_widgets == [] and count_frames == {'figures': 0, 'frames': 0}
    assert 'on_batch_end' not in sg.active_events() and CallbackHandler([sg])._cbs['on_batch_end'] == []  # no per-batch call
    assert len(learn.recorder.losses) == 8


def test_save_path_writes_png_in_script_mode(make_learner, tmp_path, count_widgets):
    path = tmp_path / 'sub' / 'loss.png'
    learn = make_learner(callback_fns=functools.partial(ShowGraph, save_path=path))
    with quiet(): learn.fit(2, 1e-2)
    assert png_size(path.read_bytes()) == (480, 240) and count_widgets == []


def test_live_panel_draws_final_frame(make_learner, count_frames, monkeypatch):
    monkeypatch.setattr(ShowGraph, 'min_gap', 1e6)                   # no epoch-end frames either
    learn = make_learner(callback_fns=functools.partial(ShowGraph, live=True, redraw_every=1e6))
    with quiet(): learn.fit(3, 1e-2)
    sg = learn.show_graph
    assert isinstance(sg.panel, TrainingPanel) and isinstance(sg.panel.image, W.Image)
    assert count_frames == {'figures': 1, 'frames': 1}              # throttled: only the end is drawn
    assert bytes(sg.panel.image.value) == sg.png and png_size(sg.png) == (480, 240)
    assert sg.panel.status.value.startswith('Finished: 3 epochs, 12 batches') and sg.panel.stop_button.disabled
    with quiet(): learn.fit(3, 1e-2)
    assert count_frames == {'figures': 1, 'frames': 2}              # the next fit reuses the figure
    assert learn.show_graph.png != sg.png


def test_live_panel_draws_every_epoch_end(make_learner, count_frames, monkeypatch):
    monkeypatch.setattr(ShowGraph, 'min_gap', 0.)
    learn = make_learner(callback_fns=functools.partial(ShowGraph, live=True, redraw_every=1e6))
    seen = []
    class Watch(Callback):
        _order = 10
        def on_epoch_end(self, **kwargs): seen.append(learn.show_graph._drawn)
    with quiet(): learn.fit(3, 1e-2, callbacks=[Watch()])
    assert seen == [(4, 1), (8, 2), (12, 3)]                         # each epoch end drawn, validation point included
    assert count_frames['frames'] == 3                                # the end adds nothing new to draw


def test_live_panel_redraws_when_due(make_learner, count_frames):
    learn = make_learner(callback_fns=functools.partial(ShowGraph, live=True, redraw_every=0.))
    frames = []
    class Watch(Callback):
        _order = 10
        def on_batch_end(self, train, **kwargs):
            if train: frames.append(bytes(learn.show_graph.panel.image.value))
    with quiet(): learn.fit(2, 1e-2, callbacks=[Watch()])
    assert count_frames['frames'] >= 8 and len(set(frames)) == 8     # a new picture at every batch
    assert learn.show_graph._plot.canvas._key[0] == (0, 8)            # v1's projected x bound: 2 epochs of 4 batches


def test_resumed_one_cycle_projects_the_epochs_it_runs(make_learner, tmp_path):
    learn = make_learner(callback_fns=LIVE)
    with quiet(): learn.fit_one_cycle(3, 1e-2, start_epoch=1)
    assert learn.recorder.nb_batches == [4, 4] and learn.show_graph._plot.canvas._key[0] == (0, 8)
    learn = make_learner(callback_fns=functools.partial(ShowGraph, save_path=tmp_path / 'loss.png'))  # script mode
    with quiet(): learn.fit_one_cycle(3, 1e-2, start_epoch=1)
    assert wmod.loss_plot().ax.get_xlim() == (0, 8)


def test_show_lr_draws_a_wider_figure(make_learner):
    learn = make_learner(callback_fns=functools.partial(ShowGraph, live=True, show_lr=True))
    with quiet(): learn.fit(1, 1e-2)
    assert png_size(learn.show_graph.png) == (800, 240)
    assert learn.show_graph.panel.image.layout.width == '800px'


def test_stop_button_from_a_callback_stops_gracefully(make_learner):
    learn = make_learner(n_train=256, callback_fns=LIVE)
    clicker = ClickStop(learn, at=10)
    with quiet() as out: learn.fit(3, 1e-2, callbacks=[clicker])      # nothing raised
    rec, sg = learn.recorder, learn.show_graph
    assert clicker.exception is False and sg.stopped_by_button and sg.is_async is False
    assert len(rec.losses) == len(rec.lrs) == len(rec.moms) == 12 and rec.nb_batches == [8, 4]
    assert rec.val_losses[0] is not None and rec.val_losses[1] is None
    assert 'Stopped with the Stop button after 12 batches (epoch 2 of 3)' in out.getvalue()
    assert 'Stopped with the Stop button' in sg.panel.status.value and sg.panel.stop_button.disabled


def test_stop_during_validation_lets_it_finish(make_learner):
    learn = make_learner(n_valid=128, callback_fns=LIVE)
    clicker = ClickStop(learn, val_at=1)
    with quiet(): learn.fit(3, 1e-2, callbacks=[clicker])
    rec = learn.recorder
    assert clicker.exception is False and rec.nb_batches == [4] and clicker.n_val == 4
    assert rec.val_losses[0] is not None


def test_sync_fit_note_says_interrupt(make_learner):
    learn = make_learner(callback_fns=LIVE)
    notes = []
    class Note(Callback):
        def on_epoch_begin(self, **kwargs): notes.append(learn.show_graph.panel.status.value)
    with quiet(): learn.fit(1, 1e-2, callbacks=[Note()])
    assert learn.show_graph.is_async is False and 'interrupt the kernel' in notes[0]


def test_afit_stop_click_from_another_task(make_learner):
    learn = make_learner(n_train=8192, bs=16, callback_fns=LIVE)
    notes, clicked_at = [], []
    class Note(Callback):
        def on_epoch_begin(self, **kwargs): notes.append(learn.show_graph.panel.status.value)

    async def click_when_training():
        while getattr(learn, 'show_graph', None) is None or learn.show_graph.panel is None \
              or len(learn.recorder.losses) < 5: await asyncio.sleep(0.005)
        clicked_at.append(len(learn.recorder.losses))
        learn.show_graph.panel.stop_button.click()

    async def main():
        clicking = asyncio.ensure_future(click_when_training())
        await learn.afit(3, 1e-2, callbacks=[Note()])
        await clicking

    with quiet(): asyncio.run(main())
    rec, sg = learn.recorder, learn.show_graph
    assert sg.is_async is True and 'Stop ends training' in notes[0]
    assert sg.stopped_by_button and len(rec.losses) == clicked_at[0] + 1 < 3 * 512   # the next batch was the last
    assert sum(rec.nb_batches) == len(rec.losses) == len(rec.lrs)


def test_exception_and_interrupt_propagate_and_are_reported(make_learner):
    learn = make_learner(callback_fns=LIVE)
    with quiet() as out, pytest.raises(RuntimeError, match='boom'):
        learn.fit(2, 1e-2, callbacks=[Raise(RuntimeError('boom'), 2)])
    assert 'Stopped by RuntimeError: boom' in learn.show_graph.panel.status.value and 'RuntimeError' in out.getvalue()
    with quiet(), pytest.raises(KeyboardInterrupt): learn.fit(2, 1e-2, callbacks=[Raise(KeyboardInterrupt(), 3)])
    status = learn.show_graph.panel.status.value
    assert status.startswith('Interrupted (KeyboardInterrupt) after 4 batches (epoch 1 of 2)')


def test_validate_with_show_graph_in_callbacks_builds_no_panel(make_learner):
    learn = make_learner()
    sg = ShowGraph(learn, live=True)
    learn.callbacks.append(sg)
    assert len(learn.validate()) == 1 and sg.panel is None
    with quiet(): learn.fit(1, 1e-2)
    assert sg.panel is not None and sg.png is not None


def test_progress_bars_and_table_go_into_the_panel(make_learner, notebook_bars):
    learn = make_learner(callback_fns=LIVE)
    with quiet(): learn.fit(2, 1e-2)
    progress = learn.show_graph.panel.progress.value
    assert '<table' in progress and 'train_loss' in progress and 'valid_loss' in progress


def test_in_a_kernel_the_panel_is_replaced_by_static_output(make_learner, notebook_bars, fake_kernel):
    from IPython.display import HTML, Image
    learn = make_learner(callback_fns=ShowGraph)                       # live by itself in a (fake) kernel
    with quiet(): learn.fit(2, 1e-2)
    sg = learn.show_graph
    assert sg.live and [kind for kind, _ in fake_kernel] == ['display', 'update', 'display']
    assert fake_kernel[0][1] is sg.panel.widget
    table, image = fake_kernel[1][1], fake_kernel[2][1]
    assert isinstance(table, HTML) and '<table' in table.data and 'valid_loss' in table.data
    assert isinstance(image, Image) and image.data == sg.png == bytes(sg.panel.image.value)


def test_export_keeps_the_settings_not_the_panel(make_learner, tmp_path):
    from fastcb_nb.learner import load_learner
    learn = make_learner()
    learn.callbacks.append(ShowGraph(learn, live=True, save_path=tmp_path / 'loss.png', redraw_every=2.))
    with quiet(): learn.fit(1, 1e-2)
    assert learn.callbacks[0].get_state() == {'save_path': tmp_path / 'loss.png', 'show_lr': False,
                                              'redraw_every': 2., 'dpi': 80}
    learn.export()
    sg = load_learner(tmp_path, data=learn.data).callbacks[0]
    assert isinstance(sg, ShowGraph) and sg.redraw_every == 2. and not sg.live and sg.panel is None


def test_only_rank_zero_draws(make_learner, monkeypatch, count_widgets):
    monkeypatch.setenv('RANK', '1')
    learn = make_learner(callback_fns=LIVE)
    with quiet(): learn.fit(1, 1e-2)
    assert not learn.show_graph.live and learn.show_graph.panel is None and count_widgets == []


def test_panel_widgets_and_css_classes():
    panel = TrainingPanel()
    assert isinstance(panel.widget, W.Box) and 'fcb-panel' in panel.widget._dom_classes
    for w, css in ((panel.image, 'fcb-panel-image'), (panel.stop_button, 'fcb-stop'),
                   (panel.status, 'fcb-panel-status'), (panel.progress, 'fcb-panel-progress')):
        assert css in w._dom_classes
    assert panel.image.layout.height == '240px' and callable(panel._ipython_display_)


# -- LRFinderPicker ----------------------------------------------------------------------------------------------

@pytest.fixture
def found(make_learner):
    "A learner after a real lr_find."
    learn = make_learner(n_train=1024, bs=16)
    with quiet(): learn.lr_find(num_it=60, end_lr=1)
    return learn


def test_picker_slider_moves_the_marker(found):
    p = LRFinderPicker(found)
    rec = found.lr_find_recorder
    assert p.recorder is rec and isinstance(p.slider, W.FloatLogSlider)
    assert math.isclose(p.slider.base ** p.slider.min, min(rec.lrs), rel_tol=1e-6)
    assert math.isclose(p.slider.base ** p.slider.max, max(rec.lrs), rel_tol=1e-6)
    seen = {bytes(p.image.value)}
    for v in (1e-6, 1e-4, 1e-2):
        p.slider.value = v
        assert p.value == v
        seen.add(bytes(p.image.value))
    assert len(seen) == 4
    p.slider.value = 1e-4
    assert bytes(p.image.value) in seen                                 # same position, same picture


def test_picker_suggestions_and_buttons(found):
    p = LRFinderPicker(found)
    lrs = found.lr_find_recorder.lrs
    assert set(p.suggestions) == set(p.suggestion_buttons) == {'min_grad', 'valley', 'steep', 'min_loss'}
    expected = found.lr_find_recorder.suggestions()
    for m, lr in p.suggestions.items():
        assert min(lrs) <= lr <= max(lrs)
        assert lr == min(max(expected[m], min(lrs)), max(lrs))
    for m, b in p.suggestion_buttons.items():
        p.slider.value = 0.5
        b.click()
        assert p.value == p.suggestions[m]
        assert f'fcb-suggest-{m}' in b._dom_classes


def test_picker_clamps_suggestions_into_the_recorded_range(make_learner):
    learn = make_learner()
    with quiet(): learn.fit(1, 1e-3)
    rec = learn.recorder
    n = 40
    rec.lrs = list(np.geomspace(1e-5, 1e-1, n))
    rec.losses = [3. - 0.05 * i for i in range(n)]                      # min loss at the top lr, steepest at the end
    p = rec.picker(skip_start=0, skip_end=0)
    assert p.suggestions['min_loss'] == pytest.approx(1e-2)              # lr at min loss / 10, inside the range
    assert all(1e-5 <= v <= 1e-1 for v in p.suggestions.values())
    rec.losses = [1.] * n
    rec.losses[0] = 1e-9                                                # min loss at the lowest lr: /10 is below it
    assert rec.picker(skip_start=0, skip_end=0).suggestions['min_loss'] == min(rec.lrs)


def test_use_this_lr_then_fit_one_cycle(found):
    p = LRFinderPicker(found)
    p.suggestion_buttons['valley'].click()
    chosen = p.value
    p.use_button.click()
    assert found.lr == chosen and f'{chosen:.2e}' in p.status.value and 'fcb-picker-status' in p.status._dom_classes
    with quiet(): found.fit_one_cycle(1)
    assert math.isclose(max(found.recorder.lrs), chosen, rel_tol=1e-9)
    # `fit` without a rate uses it too; the picker still reads the lr_find run, not the later fits
    with quiet(): found.fit(1)
    assert found.recorder.lrs[0] == chosen and LRFinderPicker(found).recorder is found.lr_find_recorder


def test_picker_falls_back_to_the_recorder(make_learner):
    learn = make_learner(n_train=1024, bs=16)
    with quiet(): learn.fit(1, 1e-3)
    assert getattr(learn, 'lr_find_recorder', None) is None
    assert LRFinderPicker(learn).recorder is learn.recorder


def test_picker_too_few_points_is_a_message(make_learner, found):
    learn = make_learner()
    with quiet(): learn.fit(1, 1e-3)
    learn.recorder.lrs, learn.recorder.losses = learn.recorder.lrs[:1], learn.recorder.losses[:1]
    p = LRFinderPicker(learn)
    assert 'Too few points' in p.status.value and p.suggestions == {} and p.suggestion_buttons == {}
    assert p.use_button.disabled and p.slider.disabled and bytes(p.image.value)[:8] == PNG
    # enough for a slider, not for suggestions (v1's skips leave nothing)
    rec = found.lr_find_recorder
    rec.lrs, rec.losses = rec.lrs[:12], rec.losses[:12]
    p = LRFinderPicker(found)
    assert p.suggestions == {} and 'No suggestions' in p.status.value and not p.use_button.disabled
    p.slider.value = rec.lrs[5]
    p.use_button.click()
    assert found.lr == rec.lrs[5]
    # no fit at all yet
    assert 'Too few points' in LRFinderPicker(make_learner()).status.value


def test_lr_find_picker_and_css(make_learner):
    learn = make_learner(n_train=1024, bs=16)
    with quiet(): p = learn.lr_find_picker(num_it=40, end_lr=1)
    assert isinstance(p, LRFinderPicker) and p.recorder is learn.lr_find_recorder and len(p.recorder.lrs) > 10
    assert 'fcb-picker' in p.widget._dom_classes and 'fcb-picker-slider' in p.slider._dom_classes
    assert 'fcb-picker-image' in p.image._dom_classes and 'fcb-use-lr' in p.use_button._dom_classes
    assert callable(p._ipython_display_)


# -- OneCyclePreview ---------------------------------------------------------------------------------------------

def test_preview_curves_follow_the_sliders(make_learner):
    learn = make_learner()
    p = OneCyclePreview(learn, cyc_len=2, max_lr=1e-2)
    n = len(learn.data.train_dl)
    assert len(p.lrs) == len(p.moms) == 2 * n and math.isclose(max(p.lrs), 1e-2)
    assert math.isclose(max(p.moms), 0.95) and math.isclose(min(p.moms), 0.85)
    images = {bytes(p.image.value)}
    for name, value in (('max_lr', 3e-2), ('div_factor', 10.), ('pct_start', 0.5), ('final_div', 1e3),
                        ('moms', (0.8, 0.9)), ('cyc_len', 3)):
        p.sliders[name].value = value
        images.add(bytes(p.image.value))
        assert 'fcb-preview-slider' in p.sliders[name]._dom_classes
    assert len(images) == 7 and len(p.lrs) == 3 * n
    assert math.isclose(max(p.lrs), 3e-2) and math.isclose(p.lrs[0], 3e-3)      # max_lr / div_factor
    peak = p.lrs.index(max(p.lrs))
    assert peak == round(0.5 * len(p.lrs)) and 3e-5 < p.lrs[-1] < p.lrs[0]       # pct_start; towards max_lr/final_div
    assert all(a >= b for a, b in zip(p.lrs[peak:], p.lrs[peak + 1:]))
    assert math.isclose(max(p.moms), 0.9) and math.isclose(min(p.moms), 0.8) and p.moms[0] == pytest.approx(0.9)


def test_preview_final_div_follows_div_factor_until_moved(make_learner):
    p = OneCyclePreview(make_learner())
    assert math.isclose(p.sliders['final_div'].value, 25e4) and p.schedule_kwargs()['final_div'] is None
    p.sliders['div_factor'].value = 10.
    assert math.isclose(p.sliders['final_div'].value, 1e5) and p.schedule_kwargs()['final_div'] is None
    p.sliders['final_div'].value = 100.
    p.sliders['div_factor'].value = 20.
    assert p.schedule_kwargs()['final_div'] == pytest.approx(100.)


def test_preview_train_sync_records_the_previewed_schedule(make_learner):
    learn = make_learner()
    p = OneCyclePreview(learn, cyc_len=2, max_lr=5e-3, pct_start=0.25, moms=(0.9, 0.8), div_factor=5.)
    p.sliders['final_div'].value = 1e3
    p.sliders['cyc_len'].value = 3
    shown = (list(p.lrs), list(p.moms))
    with quiet(): p.train_button.click()
    assert p.task is None and p.exception is None and not p.train_button.disabled
    assert (learn.recorder.lrs, learn.recorder.moms) == shown
    assert p.panel_box.children == (p.show_graph.panel.widget,) and p.panel is p.show_graph.panel


def test_preview_train_as_task_records_the_previewed_schedule(make_learner, monkeypatch):
    import IPython
    monkeypatch.setattr(IPython, 'get_ipython', lambda: None)   # plain Python, even if another test made a shell
    learn = make_learner()
    p = OneCyclePreview(learn, cyc_len=2, max_lr=1e-2, tot_epochs=3)     # difference 2: the schedule spans 3 epochs
    shown = (list(p.lrs), list(p.moms))
    assert len(shown[0]) == 2 * len(learn.data.train_dl)

    async def main():
        p.train_button.click()                     # plain Python with a running loop: a task
        assert p.task is not None and p.train_button.disabled
        p.train_button.click()                     # ignored while it runs
        await p.task
    with quiet(): asyncio.run(main())
    assert p.exception is None and p.show_graph.is_async and not p.train_button.disabled
    assert (learn.recorder.lrs, learn.recorder.moms) == shown


def test_preview_train_error_is_shown(make_learner):
    learn = make_learner()
    learn.callbacks.append(Raise(RuntimeError('boom'), 2))
    p = OneCyclePreview(learn, max_lr=1e-2)
    with quiet(): p.train_button.click()
    assert isinstance(p.exception, RuntimeError) and 'boom' in p.error.value and not p.train_button.disabled

    async def main():
        p.use_task = True
        p.train_button.click()
        await p.task                               # the task ends normally: the error is in the preview
    p.exception = None
    with quiet(): asyncio.run(main())
    assert isinstance(p.exception, RuntimeError) and 'Training failed: RuntimeError: boom' in p.error.value


def test_preview_uses_the_learners_show_graph(make_learner):
    learn = make_learner(callback_fns=ShowGraph)
    p = OneCyclePreview(learn, max_lr=1e-2)
    with quiet(): p.train_button.click()
    # the learner's own ShowGraph (from callback_fns) shows its panel in the preview: no second one
    assert p.show_graph is None and learn.show_graph.live and p.panel is learn.show_graph.panel


def test_preview_default_max_lr(make_learner, found):
    learn = make_learner()
    assert default_max_lr(learn) == defaults.lr
    assert math.isclose(OneCyclePreview(learn).sliders['max_lr'].value, defaults.lr.stop)
    suggested = found.lr_find_recorder.suggestion()                     # the default rule's (descent)
    assert math.isclose(OneCyclePreview(found).sliders['max_lr'].value, suggested)
    found.lr = 2e-3
    assert math.isclose(OneCyclePreview(found).sliders['max_lr'].value, 2e-3)


def test_preview_bad_max_lr_names_it(make_learner):
    with pytest.raises(ValueError, match='max_lr'): OneCyclePreview(make_learner(), max_lr=-1e-3)
    p = OneCyclePreview(make_learner(), max_lr=1e-2)
    p.sliders['pct_start'].value = 0.01
    shown = list(p.lrs)
    p.sliders['cyc_len'].value = 2
    assert len(p.lrs) == 2 * len(shown)


def test_preview_discriminative_rates_keep_their_ratios(make_learner):
    from torch import nn
    learn = make_learner()
    learn.layer_groups = [learn.model[0], learn.model[2]]
    learn.opt = None
    p = OneCyclePreview(learn, max_lr=slice(1e-4, 1e-2))
    assert math.isclose(p.sliders['max_lr'].value, 1e-2)
    p.sliders['max_lr'].value = 2e-2
    assert np.allclose(p.max_lr, [2e-4, 2e-2])
    shown = list(p.lrs)
    with quiet(): p.train_button.click()
    assert p.exception is None and learn.recorder.lrs == shown
    g0, g1 = [g['lr'] for g in learn.opt.param_groups]
    assert math.isclose(g0 / g1, 0.01)


def test_preview_css_and_display():
    from fastcb_nb.learner import synthetic_data
    from torch import nn
    learn = Learner(synthetic_data(n_train=64, n_valid=0, bs=32, device='cpu'), nn.Linear(8, 2),
                    loss_func=CrossEntropyFlat())
    p = OneCyclePreview(learn)
    assert 'fcb-preview' in p.widget._dom_classes and 'fcb-train' in p.train_button._dom_classes
    assert 'fcb-preview-image' in p.image._dom_classes and callable(p._ipython_display_)
    assert len(p.lrs) == 2

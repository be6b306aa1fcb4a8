"""Seeing the callback system (issue 15): `learn.show_callbacks()` against the calls a real fit makes, and
`EventTrace` (events, stopped_by, times) against an independent log of every call.

The independent log is `sys.setprofile`: a call of the listener the handler's dispatch loop (`CallbackHandler._call`,
`TracedCallbackHandler._call`) holds in its `fn` variable is a listener call; the event is read from the loop's own
`event` variable, the callback from the method's `self`, the batch kind and index from the handler's state. Nothing the trace module computes is used to build the expected values."""
import functools, sys, time

import pytest

from conftest import quiet
from fastcb_nb.core import defaults, ArgumentError
from fastcb_nb.callback import EVENTS, Callback, CallbackHandler, TracedCallbackHandler, AverageMetric
from fastcb_nb.learner import Learner
from fastcb_nb.metrics import accuracy
from fastcb_nb.tracker import EarlyStoppingCallback
from fastcb_nb.trace import EventTrace, CallbackTable

BATCH = ('on_batch_begin', 'on_loss_begin', 'on_backward_begin', 'on_backward_end', 'on_step_end', 'on_batch_end')
DISPATCH = {CallbackHandler._call.__code__, TracedCallbackHandler._call.__code__}


def name_of(cb) -> str:
    return cb.name if isinstance(cb, AverageMetric) else type(cb).__name__


class CallLog:
    "Every listener call the handler makes while active: dicts with event, callback (object), train, iteration, epoch."
    def __init__(self): self.calls = []

    def _profile(self, frame, what, arg):
        if what != 'call' or frame.f_back is None or frame.f_back.f_code not in DISPATCH: return
        caller = frame.f_back.f_locals
        fn = caller.get('fn')                 # the listener the loop calls now (not a tracer's hooks)
        if fn is None or frame.f_code is not getattr(getattr(fn, '__func__', fn), '__code__', None): return
        handler, me = caller['self'], fn.__self__
        s = handler.state_dict
        self.calls.append(dict(event=caller['event'], callback=me, train=s.get('train'), iteration=s.get('iteration'),
                               epoch=s.get('epoch')))

    def __enter__(self):
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc): sys.setprofile(None)


# -- callbacks from every source, each overriding its own events

def _logged(name, order, events):
    "A callback class `name` with `_order` `order` that overrides `events` (doing nothing)."
    def make(event): return lambda self, **kwargs: None
    return type(name, (Callback,), {'_order': order, **{e: make(e) for e in events}})

Persistent = _logged('Persistent', 5, ['on_epoch_begin', 'on_batch_end', 'on_train_end'])
Factory = _logged('Factory', -20, ['on_batch_begin', 'on_loss_begin', 'on_epoch_end'])
Extra = _logged('Extra', 0, ['on_train_begin', 'on_backward_end', 'on_step_end'])
ExtraFactory = _logged('ExtraFactory', -5, ['on_backward_begin', 'on_batch_end'])
Argument = _logged('Argument', -10, ['on_epoch_begin', 'on_loss_begin', 'on_epoch_end'])   # ties with the Recorder
Late = _logged('Late', 100, ['on_train_begin', 'on_batch_begin', 'on_train_end'])


class PerInstance(Callback):
    "Overrides one event on the instance only (as `RaiseAt` does)."
    def __init__(self): self.on_step_end = self._step
    def _step(self, **kwargs): pass


class CountingMetric(Callback):
    "A callback metric (kept as it is by the handler)."
    def on_epoch_begin(self, **kwargs): pass
    def on_batch_end(self, **kwargs): pass
    def on_epoch_end(self, last_metrics, **kwargs): return {'last_metrics': last_metrics + [0.]}


SOURCES = {'Persistent': 'learn.callbacks', 'Factory': 'callback_fns', 'Extra': 'defaults.extra_callbacks',
           'ExtraFactory': 'defaults.extra_callback_fns', 'Argument': 'the callbacks argument',
           'Late': 'the callbacks argument', 'PerInstance': 'the callbacks argument', 'Recorder': 'the Recorder',
           'accuracy': 'learn.metrics', 'CountingMetric': 'learn.metrics'}


@pytest.fixture
def every_source(make_learner, monkeypatch):
    "A learner with callbacks from every source and two metrics; `.extra()` the fit's own callbacks."
    monkeypatch.setattr(defaults, 'extra_callbacks', [Extra()])
    monkeypatch.setattr(defaults, 'extra_callback_fns', [lambda learn: ExtraFactory()])
    learn = make_learner(metrics=[accuracy, CountingMetric()], callbacks=[Persistent()],
                         callback_fns=[lambda learn: Factory()], silent=True)
    learn.extra = lambda: [Late(), Argument(), PerInstance()]
    return learn


def expected_calls(table: CallbackTable, event: str, phase: str) -> list:
    "Names the table says `event` calls in a training batch ('train'), a validation batch ('valid') or otherwise."
    rows = [r for r in table.rows if r['event'] == event]
    if phase == 'train': rows = [r for r in rows if 'training' in r['when']]
    elif phase == 'valid': rows = [r for r in rows if 'validation' in r['when']]
    return [name_of(r['callback']) for r in rows]


def real_calls(log: CallLog, event: str, phase: str) -> list:
    "Names of what `event` really called: in the first training or validation batch, or in the first epoch."
    if event in BATCH:
        calls = [c for c in log.calls if c['event'] == event and c['train'] == (phase == 'train')]
        if not calls: return []
        calls = [c for c in calls if (c['iteration'], c['epoch']) == (calls[0]['iteration'], calls[0]['epoch'])]
        # the batches of a validation share one iteration: the first batch ends where a callback is called again
        ids = [id(c['callback']) for c in calls]
        calls = calls[:next((i for i in range(1, len(ids)) if ids[i] in ids[:i]), len(ids))]
    else:
        calls = [c for c in log.calls if c['event'] == event and (event.startswith('on_train') or c['epoch'] == 0)]
    return [name_of(c['callback']) for c in calls]


def test_show_callbacks_lists_exactly_what_the_handler_calls_in_order(every_source):
    learn = every_source
    table = learn.show_callbacks(learn.extra())
    with CallLog() as log, quiet(): learn.fit(2, 1e-3, callbacks=learn.extra())
    checked = 0
    for event in EVENTS:
        phases = ('train', 'valid') if event in ('on_batch_begin', 'on_loss_begin', 'on_batch_end') else \
                 ('train',) if event in BATCH else ('once',)
        for phase in phases:
            real = real_calls(log, event, phase)
            assert expected_calls(table, event, phase) == real, (event, phase)
            checked += len(real)
    # every source and both metrics took part, each at the events it overrides
    names = {name_of(c['callback']) for c in log.calls}
    assert names == set(SOURCES), names
    assert checked > 30
    for r in table.rows:
        assert r['source'] == SOURCES[name_of(r['callback'])], r
        assert r['order'] == getattr(r['callback'], '_order', 0)
    # only overridden events are listed: PerInstance only at on_step_end, the metrics never at loss/backward events
    assert [r['event'] for r in table.rows if r['name'] == 'PerInstance'] == ['on_step_end']
    assert not [r for r in table.rows if r['kind'] == 'metric' and r['event'] in BATCH[1:5]]


def test_show_callbacks_order_is_the_sort_of_the_run(every_source):
    "Ties keep the assembly order (learn.callbacks, callback_fns (Recorder first), extra fns, argument)."
    learn = every_source
    table = learn.show_callbacks(learn.extra())
    with CallLog() as log, quiet(): learn.fit(1, 1e-3, callbacks=learn.extra())
    at_epoch_begin = [name_of(c['callback']) for c in log.calls if c['event'] == 'on_epoch_begin']
    assert table.calls('on_epoch_begin') == at_epoch_begin
    # the Recorder (-10, callback_fns) comes before Argument (-10, the callbacks argument): a stable sort
    assert at_epoch_begin.index('Recorder') < at_epoch_begin.index('Argument') < at_epoch_begin.index('Persistent')


def test_show_callbacks_changes_nothing_on_the_learner(every_source):
    learn = every_source
    with quiet(): learn.fit(1, 1e-3)
    recorder, callbacks, fns = learn.recorder, list(learn.callbacks), list(learn.callback_fns)
    before = dict(vars(learn))
    learn.show_callbacks()
    assert learn.recorder is recorder and learn.callbacks == callbacks and learn.callback_fns == fns
    assert dict(vars(learn)) == before


def test_show_callbacks_text_and_html_tables(every_source):
    learn = every_source
    table = learn.show_callbacks(learn.extra())
    text, page = str(table), table._repr_html_()
    assert repr(table) == text
    for i, event in enumerate(EVENTS, 1):
        assert f'{i} ' in text and event in text and f'<td>{event}</td>' in page
    assert page.count('<tr>') == 1 + len(table.rows) + sum(1 for e in EVENTS if not table.calls(e))
    assert text.count('\n') == 1 + len(table.rows) + sum(1 for e in EVENTS if not table.calls(e))


def test_show_callbacks_refuses_what_fit_refuses(make_learner):
    learn = make_learner(silent=True)
    with pytest.raises(ArgumentError, match='callbacks'): learn.show_callbacks([Persistent])
    with pytest.raises(ArgumentError, match='callbacks'): learn.show_callbacks(['not a callback'])


# -- EventTrace

class Returns(Callback):
    "Returns a new `last_output` (the same one) at loss_begin and counts its calls."
    _order = 3
    def __init__(self): self.returned = []
    def on_loss_begin(self, last_output, **kwargs):
        ret = {'last_output': last_output}
        self.returned.append(ret)
        return ret


def five_callbacks():
    return [Persistent(), Factory(), Extra(), Returns(), Late()]


def traced_fit(learn, epochs, max_batches, cbs):
    "`(trace, real)`: the trace's `(event, callback)` of a fit, and the real calls it should hold (no validation batches, no training batch from `max_batches` on)."
    trace = EventTrace(max_batches=max_batches)
    with CallLog() as log, quiet(): learn.fit(epochs, 1e-3, callbacks=[trace] + cbs)
    real = [(c['event'], name_of(c['callback'])) for c in log.calls
            if not (c['event'] in BATCH and (not c['train'] or c['iteration'] >= max_batches))]
    return trace, real


def test_trace_events_are_the_real_call_sequence_of_a_two_batch_fit(make_learner):
    learn = make_learner(n_train=64, bs=32, metrics=[accuracy], silent=True)      # two training batches
    assert len(learn.data.train_dl) == 2
    cbs = five_callbacks()
    trace, real = traced_fit(learn, 1, 3, cbs)
    assert [(e["event"], e["callback"]) for e in trace.events] == real and len(real) > 25
    # what a callback returned is in its entry (a copy)
    returned = [e['returned'] for e in trace.events if e['callback'] == 'Returns']
    assert len(returned) == 2 and returned == cbs[3].returned[:2] and returned[0] is not cbs[3].returned[0]
    assert all(e['returned'] is None for e in trace.events if e['callback'] != 'Returns' and e['event'] != 'on_epoch_end')
    # the batch events of each training batch come in the loop's order (V1_BEHAVIOUR 1.3), then the epoch's end
    events = [e['event'] for e in trace.events]
    assert [ev for i, ev in enumerate(events) if i == 0 or events[i - 1] != ev] == \
        ['on_train_begin', 'on_epoch_begin'] + list(BATCH) * 2 + ['on_epoch_end', 'on_train_end']
    assert [e['iteration'] for e in trace.events if e['event'] == 'on_backward_end'] == [0, 1]
    # over two epochs, the cut at max_batches falls in the second epoch
    trace, real = traced_fit(learn, 2, 3, five_callbacks())
    assert [(e['event'], e['callback']) for e in trace.events] == real
    assert {e['iteration'] for e in trace.events if e['event'] in BATCH} == {0, 1, 2}


def test_trace_records_only_the_first_max_batches_but_times_every_call(make_learner):
    learn = make_learner(n_train=128, bs=32, metrics=[accuracy], silent=True)      # 4 training batches
    trace = EventTrace(max_batches=3)
    with CallLog() as log, quiet(): learn.fit(2, 1e-3, callbacks=[trace] + five_callbacks())
    assert {e['iteration'] for e in trace.events if e['event'] in BATCH} == {0, 1, 2}
    counted = {}
    for c in log.calls:
        key = (name_of(c['callback']), c['event'])
        counted[key] = counted.get(key, 0) + 1
    assert trace.calls == counted                  # every call of the whole run, validation batches included
    assert set(trace.times) == set(counted)


def test_a_new_run_starts_a_new_record(make_learner):
    learn = make_learner(silent=True)
    trace = EventTrace()
    with quiet(): learn.fit(1, 1e-3, callbacks=[trace, StopAt(1, 'on_batch_end')])
    assert trace.stopped_by is not None
    first = len(trace.events)
    with quiet(): learn.fit(1, 1e-3, callbacks=[trace])
    assert trace.stopped_by is None and trace.calls[('Recorder', 'on_backward_begin')] == len(learn.data.train_dl)
    assert 0 < len(trace.events) < first + 10


class StopAt(Callback):
    "Returns a true `key` at `event` of training iteration `iteration` (and at every later one)."
    def __init__(self, iteration, event='on_backward_end', key='stop_epoch'):
        self.iteration, self.key = iteration, key
        setattr(self, event, self._maybe)
    def _maybe(self, iteration, train, **kwargs):
        if train and iteration >= self.iteration: return {self.key: True}


def test_stopped_by_early_stopping(make_learner):
    learn = make_learner(silent=True)
    trace = EventTrace()
    with quiet(): learn.fit(6, 1e-9, callbacks=[trace, EarlyStoppingCallback(learn, min_delta=1e3)])
    nb = learn.recorder.nb_batches
    assert len(nb) < 6                                                  # it did stop early
    assert trace.stopped_by == dict(callback='EarlyStoppingCallback', event='on_epoch_end', iteration=sum(nb),
                                    epoch=len(nb) - 1, keys=('stop_training',))
    assert 'EarlyStoppingCallback at on_epoch_end' in trace.summary()


def test_stopped_by_the_end_of_the_one_cycle_schedule(make_learner):
    learn = make_learner(silent=True)
    n = len(learn.data.train_dl)
    trace = EventTrace()
    with quiet(): learn.fit_one_cycle(3, 1e-3, tot_epochs=2, callbacks=[trace])
    assert learn.recorder.nb_batches == [n, n]                          # the schedule covers 2 epochs: it stops there
    assert trace.stopped_by == dict(callback='OneCycleScheduler', event='on_batch_end', iteration=2 * n - 1, epoch=1,
                                    keys=('stop_training', 'stop_epoch'))


def test_stopped_by_a_user_callback_first_wins(make_learner):
    learn = make_learner(silent=True)
    trace = EventTrace(max_batches=1)
    with quiet(): learn.fit(2, 1e-3, callbacks=[trace, StopAt(2), StopAt(3, 'on_batch_end', 'stop_training')])
    assert trace.stopped_by == dict(callback='StopAt', event='on_backward_end', iteration=2, epoch=0,
                                    keys=('stop_epoch',))
    assert learn.recorder.nb_batches[0] == 3                            # the loop did stop the epoch there
    with quiet(): learn.fit(1, 1e-3, callbacks=[trace])
    assert trace.stopped_by is None and 'No callback set' in trace.summary()


class Sleepy(Callback):
    "Sleeps at two events, measuring from inside how long each of its calls took."
    def __init__(self, batch=1e-3, epoch=5e-3):
        self.batch, self.epoch, self.inner, self.calls = batch, epoch, {}, {}
    def _spend(self, event, seconds):
        t = time.perf_counter()
        time.sleep(seconds)
        self.inner[event] = self.inner.get(event, 0.) + time.perf_counter() - t
        self.calls[event] = self.calls.get(event, 0) + 1
    def on_batch_end(self, **kwargs): self._spend('on_batch_end', self.batch)
    def on_epoch_end(self, **kwargs): self._spend('on_epoch_end', self.epoch)


def test_times_sum_to_the_time_spent_in_callbacks(make_learner):
    """Each call's clock in the trace starts before the callback's body and stops after it, so the trace's time is at
    least what the callback measured inside itself, and exceeds it only by the call's own cost (building the
    keyword arguments and calling: about a microsecond). Allowed: 200 us per call, room for the OS preempting the
    process on a shared machine, yet five times below the 1 ms each call sleeps, so a trace that missed calls, or
    timed the batch around them, fails."""
    learn = make_learner(silent=True)
    sleepy, trace = Sleepy(), EventTrace(max_batches=1)
    t0 = time.perf_counter()
    with quiet(): learn.fit(2, 1e-3, callbacks=[trace, sleepy])
    wall = time.perf_counter() - t0
    assert sleepy.calls['on_batch_end'] == 2 * (len(learn.data.train_dl) + len(learn.data.valid_dl))
    for event, inner in sleepy.inner.items():
        traced, n = trace.times[('Sleepy', event)], trace.calls[('Sleepy', event)]
        assert n == sleepy.calls[event]
        assert inner <= traced <= inner + n * 200e-6, (event, inner, traced)
    total = sum(trace.times.values())
    assert sum(sleepy.inner.values()) <= total <= wall
    assert trace.slowest(1)[0][0] == 'Sleepy' and 0 < trace.run_seconds() <= wall + 1e-3


def test_table_prints_the_record(make_learner, capsys):
    learn = make_learner(silent=True)
    trace = EventTrace(max_batches=1)
    with quiet(): learn.fit(1, 1e-3, callbacks=[trace, StopAt(1, 'on_batch_end', 'stop_training')])
    trace.table()
    out = capsys.readouterr().out
    assert out.count('on_backward_begin') >= 2 and 'Stopped by StopAt at on_batch_end' in out
    assert 'stop_training=True' in out and 'Callbacks took' in out
    html = trace.summary_html()
    assert 'fcb-trace-summary' in html and '<td>StopAt</td>' in html or '<td>Recorder</td>' in html


def test_without_a_trace_the_handler_takes_the_plain_path():
    plain = CallbackHandler([Persistent()])
    assert plain.tracer is None and type(plain) is CallbackHandler
    trace = EventTrace()
    traced = CallbackHandler([Persistent(), trace])
    assert traced.tracer is trace and type(traced) is TracedCallbackHandler
    with pytest.raises(ArgumentError, match='max_batches'): EventTrace(-1)
    with pytest.raises(ArgumentError, match='max_batches'): EventTrace('3')


def test_the_live_panel_shows_the_trace_summary_after_training(make_learner):
    from fastcb_nb.panel import ShowGraph
    learn = make_learner(callback_fns=functools.partial(ShowGraph, live=True), silent=True)
    trace = EventTrace()
    with quiet(): learn.fit(3, 1e-3, callbacks=[trace, StopAt(5, 'on_batch_end', 'stop_training')])
    note = learn.show_graph.panel.trace.value
    assert 'Stopped by StopAt at on_batch_end (epoch 1, iteration 5)' in note
    slowest = [name for name, _, _ in trace.slowest(3)]
    assert note.index(f'<td>{slowest[0]}</td>') < note.index(f'<td>{slowest[1]}</td>')   # slowest first
    assert 'fcb-panel-trace' in learn.show_graph.panel.trace._dom_classes
    with quiet(): learn.fit(1, 1e-3)
    assert learn.show_graph.panel.trace.value == ''                    # no trace in that run: nothing shown

"""The event table of the callback chapter (issue 9): the state keys each event passes, the keys a callback may
return there and the extra keyword arguments, checked against a traced run and against the table in the notebook."""
import json, re
from pathlib import Path

import pytest

from fastcb_nb.callback import Callback, EVENTS, EVENT_TABLE, state_keys
from fastcb_nb.testing import tiny_learner, quiet

ROOT = Path(__file__).resolve().parent.parent


class FirstKeys(Callback):
    "Record the keyword arguments of the first call of each event."
    def __init__(self): self.seen = {}
    def _rec(self, event, kw): self.seen.setdefault(event, set(kw))
for _e in EVENTS: setattr(FirstKeys, _e, (lambda e: lambda self, **kw: self._rec(e, kw))(_e))


def test_traced_run_passes_the_table_keys():
    cb = FirstKeys()
    learn = tiny_learner(n_train=32, n_valid=32, bs=16)
    with quiet(): learn.fit(2, 1e-3, callbacks=[cb])
    for event in EVENTS:
        extra = set(EVENT_TABLE[event][1])
        assert cb.seen[event] == set(state_keys(event)) | extra, event


@pytest.mark.parametrize('event', EVENTS[:-1])
def test_every_listed_key_may_be_returned_and_a_later_one_may_not(event):
    keys = state_keys(event)
    class Echo(Callback):
        "Return every state key with its current value (nothing changes), at the first call of `event`."
        done = False
        def __init__(self): setattr(self, event, self.echo)
        def echo(self, **kw):
            if self.done: return None
            self.done = True
            return {k: kw[k] for k in keys}
    learn = tiny_learner(n_train=32, n_valid=32, bs=16)
    with quiet(): learn.fit(1, 1e-3, callbacks=[Echo()])
    later = [k for e in EVENTS[EVENTS.index(event) + 1:] for k in EVENT_TABLE[e][0] if k not in keys]
    if not later: return
    class Early(Callback):
        def __init__(self): setattr(self, event, lambda **kw: {later[0]: None})
    with quiet(), pytest.raises(ValueError, match=later[0]): tiny_learner().fit(1, 1e-3, callbacks=[Early()])


def test_extra_keywords_cannot_be_returned():
    for event, key in (('on_train_begin', 'metrics_names'), ('on_train_end', 'exception')):
        class Bad(Callback): pass
        setattr(Bad, event, lambda self, **kw: {key: None})
        with quiet(), pytest.raises(ValueError, match=key): tiny_learner().fit(1, 1e-3, callbacks=[Bad()])


def test_the_notebook_table_is_the_code_table():
    nb = json.loads((ROOT / 'nbs' / '01_callback.ipynb').read_text())
    text = next(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown' and '| event |' in ''.join(c['source']))
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == 4 and cells[0].startswith('`on_'):
            rows[cells[0].strip('`')] = tuple(tuple(re.findall(r'`([a-z_]+)`', c)) for c in cells[1:])
    assert list(rows) == list(EVENTS)
    for event, (adds, extra, reads) in rows.items():
        assert (adds, extra, reads) == EVENT_TABLE[event], event

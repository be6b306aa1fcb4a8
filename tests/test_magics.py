"The line magics `%lr_find`, `%fit_one_cycle` and `%callbacks` in a real IPython shell, without a browser (issues 5, 15)."
import math

import pytest
import torch
from torch import nn
from IPython.core.error import UsageError
from IPython.testing import globalipapp

import fastcb_nb
from conftest import quiet
from fastcb_nb.core import defaults
from fastcb_nb.learner import Learner, synthetic_data, CrossEntropyFlat, accuracy
from fastcb_nb.schedule import one_cycle_schedule
from fastcb_nb.widgets import LRFinderPicker, OneCyclePreview
from fastcb_nb.magics import TrainingMagics


@pytest.fixture
def ip():
    "The test IPython shell with the extension loaded and no Learner in its namespace; the namespace is restored."
    globalipapp.start_ipython()                       # once per process; later calls do nothing
    shell = globalipapp.get_ipython()
    if 'fastcb_nb' not in shell.extension_manager.loaded: shell.run_line_magic('load_ext', 'fastcb_nb')
    saved = dict(shell.user_ns)
    for name in [k for k, v in shell.user_ns.items() if isinstance(v, Learner)]: del shell.user_ns[name]
    yield shell
    shell.user_ns.clear()
    shell.user_ns.update(saved)


@pytest.fixture
def learner(make_learner):
    "A factory of small silent learners: 4 training batches of 32 per epoch."
    def _make(**kwargs):
        kwargs.setdefault('silent', True)
        return make_learner(n_train=128, n_valid=64, bs=32, **kwargs)
    return _make


def usage_error(ip, magic: str, line: str) -> str:
    "The message of the UsageError `%magic line` raises; checked to be one line."
    with pytest.raises(UsageError) as info, quiet(): ip.run_line_magic(magic, line)
    msg = str(info.value)
    assert '\n' not in msg and msg.startswith(f'%{magic}: '), msg
    return msg


def weights(learn) -> list:
    return [p.detach().clone() for p in learn.model.parameters()]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# -- loading

def test_load_ext_registers_the_line_magics(ip):
    assert {'lr_find', 'fit_one_cycle', 'callbacks'} <= set(ip.magics_manager.magics['line'])


def test_package_root_load_ipython_extension_registers_the_magics_class():
    class FakeShell:
        def register_magics(self, cls): self.registered = cls
    shell = FakeShell()
    fastcb_nb.load_ipython_extension(shell)
    assert shell.registered is TrainingMagics


# -- finding the learner

def test_the_only_learner_is_used(ip, learner):
    learn = ip.user_ns['learn'] = learner()
    ip.user_ns['alias'] = learn                       # one learner under two names is still one learner
    ip.user_ns['_7'] = learner()                      # output history (`_7`) is not the user's namespace
    with quiet(): ip.run_line_magic('fit_one_cycle', '1 1e-3')
    assert len(learn.recorder.lrs) == len(learn.data.train_dl)
    assert not hasattr(ip.user_ns['_7'], 'recorder')


def test_a_named_learner_is_used_among_several(ip, learner):
    a = ip.user_ns['a'] = learner()
    b = ip.user_ns['b'] = learner(seed=1)
    before_a = weights(a)
    with quiet(): ip.run_line_magic('fit_one_cycle', 'b 1 1e-3')
    assert len(b.recorder.lrs) == len(b.data.train_dl)
    assert same(weights(a), before_a) and not hasattr(a, 'recorder')


def test_no_learner_is_a_usage_error(ip):
    assert 'no Learner in the notebook' in usage_error(ip, 'fit_one_cycle', '1')
    assert 'no Learner in the notebook' in usage_error(ip, 'lr_find', '')


def test_several_learners_is_a_usage_error_naming_them(ip, learner):
    ip.user_ns['learn_a'], ip.user_ns['learn_b'] = learner(), learner()
    msg = usage_error(ip, 'fit_one_cycle', '1 1e-3')
    assert 'several Learners in the notebook (learn_a, learn_b)' in msg
    assert 'several Learners' in usage_error(ip, 'lr_find', '--num_it 10')


def test_a_bad_name_is_a_usage_error(ip, learner):
    ip.user_ns['learn'], ip.user_ns['n'] = learner(), 3
    assert "no variable named 'lrn'" in usage_error(ip, 'fit_one_cycle', 'lrn 1')
    assert "'n' is not a Learner (it is a int)" in usage_error(ip, 'lr_find', 'n')


# -- bad arguments

BAD_FIT_ONE_CYCLE = [
    ('1 --pct_start 1.5', 'argument --pct_start: must be in (0, 1), got 1.5'),
    ('1 --pct_start 0', 'argument --pct_start: must be in (0, 1), got 0'),
    ('1 --div_factor abc', "argument --div_factor: expected a number, got 'abc'"),
    ('1 --div_factor 0', 'argument --div_factor: must be a number > 0, got 0'),
    ('1 --final_div -2', 'argument --final_div: must be a number > 0, got -2'),
    ('1 --wd nan', "argument --wd: expected a finite number, got 'nan'"),
    ('1 --wd -0.1', 'argument --wd: must be a number >= 0, got -0.1'),
    ('1 --moms 0.95', "argument --moms: expected two momentums A,B, got '0.95'"),
    ('1 --moms 0.95,1.5', 'argument --moms: momentums must be in [0, 1), got 0.95,1.5'),
    ('1 --moms a,b', "argument --moms: expected a number, got 'a'"),
    ('1 --tot_epochs 0', 'argument --tot_epochs: must be an integer >= 1, got 0'),
    ('1 --start_epoch 1.5', "argument --start_epoch: expected an integer, got '1.5'"),
    ('1 --bogus 3', 'unrecognized arguments: --bogus 3'),
    ('1 --pct 0.2', 'unrecognized arguments: --pct 0.2'),              # no abbreviated options
    ('1 --preview=yes', "argument --preview: ignored explicit argument 'yes'"),
    ('1 --pct_start', 'argument --pct_start: expected one argument'),
    ('', 'CYC_LEN (the number of epochs) is missing'),
    ('0', 'CYC_LEN: must be an integer >= 1, got 0'),
    ('-1', 'CYC_LEN: must be an integer >= 1, got -1'),
    ('1.5', "CYC_LEN: expected an integer, got '1.5'"),
    ('1 fast', "MAX_LR must be a number > 0, a slice LO:HI, or auto; got 'fast'"),
    ('1 0', "MAX_LR must be a number > 0, a slice LO:HI, or auto; got '0'"),
    ('1 1e-3 2', "expected [LEARNER] CYC_LEN [MAX_LR|auto] before the options, got '1 1e-3 2'"),
    ('1 1e-3 --wd 0.1 --preview', '--wd and --start_epoch apply to training, not to --preview'),
    # the library's own checks (ValueError before the first batch) come through as one line too
    ('2 1e-3 --start_epoch 2', 'start_epoch must be < cyc_len (2)'),
]


@pytest.mark.parametrize('line,expected', BAD_FIT_ONE_CYCLE)
def test_fit_one_cycle_rejects_bad_input_with_one_line(ip, learner, line, expected):
    learn = ip.user_ns['learn'] = learner()
    before = weights(learn)
    assert expected in usage_error(ip, 'fit_one_cycle', line)
    assert same(weights(learn), before) and not hasattr(learn, 'recorder')


BAD_LR_FIND = [
    ('--start_lr 0', 'argument --start_lr: must be a number > 0, got 0'),
    ('--end_lr ten', "argument --end_lr: expected a number, got 'ten'"),
    ('--num_it 1', 'argument --num_it: must be an integer >= 2, got 1'),
    ('--num_it 1e3', "argument --num_it: expected an integer, got '1e3'"),
    ('--start_lr 1 --end_lr 0.5', '--end_lr must be greater than --start_lr, got 0.5 <= 1'),
    ('--no_stop_div=1', "argument --no_stop_div: ignored explicit argument '1'"),
    ('--num 10', 'unrecognized arguments: --num 10'),
    ('learn 5', "unexpected argument '5'"),
]


@pytest.mark.parametrize('line,expected', BAD_LR_FIND)
def test_lr_find_rejects_bad_input_with_one_line(ip, learner, line, expected):
    learn = ip.user_ns['learn'] = learner()
    assert expected in usage_error(ip, 'lr_find', line)
    assert not hasattr(learn, 'lr_find_recorder')


def test_a_learner_that_cannot_train_is_a_usage_error(ip, learner):
    ip.user_ns['learn'] = learner(loss_func=None)
    assert 'loss_func is None' in usage_error(ip, 'fit_one_cycle', '1 1e-3')
    assert 'loss_func is None' in usage_error(ip, 'lr_find', '')


def test_values_are_parsed_never_evaluated(ip, learner):
    ip.user_ns['learn'] = learner()
    calls = ip.user_ns['calls'] = []
    ip.user_ns['rate'] = lambda: calls.append('called') or 1e-3
    assert 'MAX_LR' in usage_error(ip, 'fit_one_cycle', '1 rate()')
    assert 'MAX_LR' in usage_error(ip, 'fit_one_cycle', '1 "__import__(\'os\').getpid()"')
    assert 'expected a number' in usage_error(ip, 'fit_one_cycle', '1 1e-3 --wd "rate()"')
    assert 'expected a number' in usage_error(ip, 'lr_find', '--end_lr 2*5')
    assert calls == []


def test_a_usage_error_shows_as_one_line_in_a_cell(ip, learner, capsys):
    ip.user_ns['learn'] = learner()
    result = ip.run_cell('%fit_one_cycle 1 --pct_start 2')
    assert isinstance(result.error_in_exec, UsageError)
    err = capsys.readouterr().err
    assert 'UsageError: %fit_one_cycle: argument --pct_start: must be in (0, 1), got 2' in err
    assert 'Traceback' not in err


def test_an_error_while_training_keeps_its_traceback(ip, learner):
    class Broken(nn.Module):
        def forward(self, x): raise ValueError('shape trouble inside the model')
    learn = ip.user_ns['learn'] = learner()
    learn.model = Broken()
    with pytest.raises(ValueError, match='shape trouble'), quiet(): ip.run_line_magic('fit_one_cycle', '1 1e-3')


# -- what the magics do

def test_training_records_the_max_lr_and_options_given(ip, learner):
    learn = ip.user_ns['learn'] = learner()
    with quiet(): ip.run_line_magic('fit_one_cycle', '2 4e-3 --pct_start 0.5 --div_factor 10 --moms 0.9,0.8 --wd 0.05')
    rec, n = learn.recorder, len(learn.data.train_dl)
    expected_lrs, expected_moms = one_cycle_schedule(learn, 2, 4e-3, moms=(0.9, 0.8), div_factor=10, pct_start=0.5)
    assert len(rec.lrs) == 2 * n and math.isclose(max(rec.lrs), 4e-3, rel_tol=1e-9)
    assert rec.lrs == pytest.approx(list(expected_lrs)) and rec.moms == pytest.approx(list(expected_moms))
    assert math.isclose(rec.lrs[0], 4e-3 / 10, rel_tol=1e-9) and math.isclose(max(rec.moms), 0.9)
    assert learn.opt.wd == pytest.approx(0.05)


def test_slice_max_lr_gives_discriminative_rates(ip, learner):
    learn = learner()
    learn.layer_groups = [learn.model[0], learn.model[2]]
    ip.user_ns['learn'] = learn
    with quiet(): ip.run_line_magic('fit_one_cycle', '1 1e-4:1e-2')
    assert [g['lr'] for g in learn.opt.opt.param_groups][0] < [g['lr'] for g in learn.opt.opt.param_groups][1]
    assert math.isclose(max(learn.recorder.lrs), 1e-2, rel_tol=1e-9)    # the recorder follows the last group


def test_auto_uses_the_default_rate_then_the_default_suggestion_then_the_picked_rate(ip, learner):
    learn = ip.user_ns['learn'] = learner()
    with quiet() as out: ip.run_line_magic('fit_one_cycle', '1')
    assert 'the default rate' in out.getvalue()
    assert math.isclose(max(learn.recorder.lrs), learn.lr_range(defaults.lr)[-1], rel_tol=1e-9)

    with quiet(): picker = ip.run_line_magic('lr_find', '--num_it 40 --end_lr 1')
    suggested = learn.lr_find_recorder.suggestion()                 # the default rule's (descent)
    with quiet() as out: ip.run_line_magic('fit_one_cycle', '1 auto')
    assert 'descent suggestion of the last lr_find' in out.getvalue()
    assert math.isclose(max(learn.recorder.lrs), suggested, rel_tol=1e-9)

    picker.value = suggested / 7
    picker.use_button.click()
    assert learn.lr == pytest.approx(suggested / 7)
    with quiet() as out: ip.run_line_magic('fit_one_cycle', '1')
    assert '(learn.lr)' in out.getvalue()
    assert math.isclose(max(learn.recorder.lrs), learn.lr, rel_tol=1e-9)


def test_lr_find_returns_the_picker_with_the_options_given(ip, learner):
    learn = ip.user_ns['learn'] = learner()
    before = weights(learn)
    with quiet(): picker = ip.run_line_magic('lr_find', 'learn --start_lr 1e-5 --end_lr 1 --num_it 20')
    assert isinstance(picker, LRFinderPicker) and picker.learn is learn
    rec = learn.lr_find_recorder
    assert len(rec.lrs) <= 20 and math.isclose(rec.lrs[0], 1e-5, rel_tol=1e-9)
    assert rec.lrs == sorted(rec.lrs) and rec.lrs[-1] <= 1
    assert same(weights(learn), before)                       # lr_find puts the weights back


def test_no_stop_div_keeps_going_after_the_loss_diverges(ip, learner):
    learn = ip.user_ns['learn'] = learner()
    with quiet(): ip.run_line_magic('lr_find', '--start_lr 1e-3 --end_lr 1e4 --num_it 30')
    stopped = len(learn.lr_find_recorder.lrs)
    with quiet(): ip.run_line_magic('lr_find', '--start_lr 1e-3 --end_lr 1e4 --num_it 30 --no_stop_div')
    assert stopped < 30 and len(learn.lr_find_recorder.lrs) == 30


def test_preview_returns_a_one_cycle_preview_with_the_values_given_and_trains_nothing(ip, learner):
    learn = ip.user_ns['learn'] = learner()
    before = weights(learn)
    line = '2 4e-3 --pct_start 0.4 --div_factor 10 --final_div 100 --moms 0.9,0.8 --tot_epochs 3 --preview'
    preview = ip.run_line_magic('fit_one_cycle', line)
    assert isinstance(preview, OneCyclePreview)
    kwargs = preview.schedule_kwargs()
    assert kwargs['cyc_len'] == 2 and kwargs['tot_epochs'] == 3 and kwargs['moms'] == pytest.approx((0.9, 0.8))
    assert kwargs['max_lr'] == pytest.approx(4e-3) and kwargs['pct_start'] == pytest.approx(0.4)
    assert kwargs['div_factor'] == pytest.approx(10) and kwargs['final_div'] == pytest.approx(100)
    lrs, moms = one_cycle_schedule(learn, 2, 4e-3, moms=(0.9, 0.8), div_factor=10, pct_start=0.4, final_div=100,
                                   tot_epochs=3)
    assert preview.lrs == pytest.approx(list(lrs)) and preview.moms == pytest.approx(list(moms))
    assert same(weights(learn), before) and not hasattr(learn, 'recorder')


def test_preview_with_auto_shows_the_picked_rate(ip, learner):
    learn = ip.user_ns['learn'] = learner()
    learn.lr = 2e-3
    with quiet(): preview = ip.run_line_magic('fit_one_cycle', 'learn 1 auto --preview')
    assert math.isclose(max(preview.lrs), 2e-3, rel_tol=1e-9)


# -- %callbacks (issue 15)

def shown_by(ip, line: str) -> dict:
    "The rich display `%callbacks line` makes (mime type -> data); it displays exactly one thing and returns nothing."
    from IPython.utils.capture import capture_output
    with capture_output() as shown: result = ip.run_line_magic('callbacks', line)
    assert result is None and len(shown.outputs) == 1
    return shown.outputs[0].data


def test_callbacks_shows_the_only_learners_show_callbacks(ip, learner):
    from fastcb_nb.tracker import EarlyStoppingCallback
    learn = ip.user_ns['learn'] = learner(metrics=[accuracy])
    learn.callbacks.append(EarlyStoppingCallback(learn))
    data = shown_by(ip, '')                                 # a terminal shell: the text table
    assert data['text/plain'] == str(learn.show_callbacks()) and 'text/html' not in data
    assert 'EarlyStoppingCallback' in data['text/plain'] and 'learn.callbacks' in data['text/plain']
    html = ip.display_formatter.formatters['text/html']     # a notebook kernel shows the HTML table
    enabled, html.enabled = html.enabled, True
    try: data = shown_by(ip, 'learn')
    finally: html.enabled = enabled
    assert data['text/html'] == learn.show_callbacks()._repr_html_() and '<td>EarlyStoppingCallback</td>' in data['text/html']


def test_callbacks_of_a_named_learner_with_callback_variables(ip, learner):
    from fastcb_nb.tracker import EarlyStoppingCallback
    from fastcb_nb.trace import EventTrace
    ip.user_ns['a'], ip.user_ns['b'] = learner(), learner(metrics=[accuracy])
    b = ip.user_ns['b']
    ip.user_ns['early'], ip.user_ns['more'] = EarlyStoppingCallback(b), [EventTrace()]
    data = shown_by(ip, 'b early more')
    assert data['text/plain'] == str(b.show_callbacks([ip.user_ns['early'], ip.user_ns['more'][0]]))
    assert 'the callbacks argument' in data['text/plain'] and 'accuracy' in data['text/plain']
    ip.user_ns.pop('a')
    assert shown_by(ip, 'early')['text/plain'] == str(b.show_callbacks([ip.user_ns['early']]))  # the only learner


def test_callbacks_bad_input_is_a_usage_error(ip, learner):
    assert 'no Learner in the notebook' in usage_error(ip, 'callbacks', '')
    ip.user_ns['learn'], ip.user_ns['n'] = learner(), 3
    assert "no variable named 'nothing'" in usage_error(ip, 'callbacks', 'learn nothing')
    assert 'callbacks' in usage_error(ip, 'callbacks', 'learn n')             # 3 is not a callback
    assert 'unrecognized arguments: --all' in usage_error(ip, 'callbacks', 'learn --all')
    ip.user_ns['other'] = learner()
    assert 'several Learners' in usage_error(ip, 'callbacks', '')

"Model inspection: hooks removed after use, HookCallback/ActivationStats over fits, summary, split, model helpers."
import pytest
import torch
from torch import nn

from fastcb_nb.all import *
from fastcb_nb.testing import quiet, tiny_learner

torch.set_num_threads(1)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 2))


def no_hooks(model):
    return not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_hooks_removed_after_use():
    m = mlp()
    with hook_outputs(m) as hs: m(torch.randn(4, 8))
    assert no_hooks(m) and all(h.removed for h in hs)
    with hook_outputs(list(m), grad=True) as hs: m(torch.randn(4, 8)).sum().backward()
    assert no_hooks(m) and hs[3].stored[0].shape == (4, 2)
    h = Hook(m[0], lambda mod, i, o: o.sum())
    h.remove(); h.remove()
    assert no_hooks(m)
    learn = tiny_learner(model=mlp(), silent=True)
    learn.summary()
    assert no_hooks(learn.model)
    model_sizes(learn.model, ())
    assert no_hooks(learn.model)


class CountCalls(HookCallback):
    def hook(self, m, i, o): return o.shape[0]


def test_hook_callback_over_fits_and_validate():
    learn = tiny_learner(model=mlp(), silent=True)
    cb = CountCalls(learn, do_remove=False)
    learn.callbacks.append(cb)
    with quiet(): learn.fit(1, 1e-3); learn.fit(1, 1e-3)
    assert all(len(m._forward_hooks) == 1 for m in (learn.model[0], learn.model[2], learn.model[3]))   # v1: 2 sets
    assert not learn.model[1]._forward_hooks           # ReLU has no parameters
    cb.remove()
    assert no_hooks(learn.model)
    learn.callbacks.remove(cb)
    with pytest.raises(NotImplementedError, match='hook'):
        with quiet(): learn.fit(1, 1e-3, callbacks=[HookCallback(learn)])
    assert no_hooks(learn.model)       # removed also after the exception


def test_activation_stats_values():
    learn = tiny_learner(model=mlp(), callback_fns=[ActivationStats], silent=True)
    with quiet(): learn.fit(2, 1e-3)
    stats = learn.activation_stats.stats
    assert stats.shape == (2, 3, 8) and stats.dtype == torch.float32
    x, _ = learn.data.valid_ds.tensors
    # the last training batch's first-layer statistics: recompute them from the data order of that batch
    learn2 = tiny_learner(model=mlp(), silent=True)
    seen = []
    with hook_output(learn2.model[0]) as h:
        class Grab(Callback):
            def on_batch_end(self, train, **kw):
                if train: seen.append((h.stored.mean().item(), h.stored.std().item()))
        with quiet(): learn2.fit(2, 1e-3, callbacks=[Grab()])
    assert torch.allclose(stats[:, 0, :].T, torch.tensor(seen), atol=1e-5)
    assert no_hooks(learn.model)


def test_activation_stats_module_never_called():
    class Skip(nn.Module):
        def __init__(self): super().__init__(); self.a, self.unused = nn.Linear(8, 2), nn.Linear(8, 2)
        def forward(self, x): return self.a(x)
    learn = tiny_learner(model=Skip(), callback_fns=[ActivationStats], silent=True)
    with quiet(): learn.fit(1, 1e-3)          # v1: RuntimeError (a stored None)
    stats = learn.activation_stats.stats
    assert torch.isfinite(stats[:, 0]).all() and torch.isnan(stats[:, 1]).all()
    s = learn.summary()
    assert s.rows[1] == ('Linear', 'not called', 18, True) and s.total == 36


def test_summary_lstm_params_and_frozen():
    class Seq(nn.Module):
        def __init__(self): super().__init__(); self.rnn, self.head = nn.LSTM(8, 4, batch_first=True), nn.Linear(4, 2)
        def forward(self, x): return self.head(self.rnn(x[:, None])[0][:, -1])
    learn = tiny_learner(model=Seq(), silent=True)
    s = learn.summary()
    lstm_params = sum(p.numel() for p in learn.model.rnn.parameters())
    assert s.rows[0] == ('LSTM', '[1, 4]', lstm_params, True) and s.total == lstm_params + 10   # v1 counted the LSTM as 0
    learn.split([learn.model.head]).freeze()
    s = learn.summary()
    assert (s.trainable, s.total - s.trainable) == (10, lstm_params)


def test_summary_footer_fixes():
    learn = tiny_learner(model=mlp(), opt_func=torch.optim.SGD, loss_func=torch.nn.functional.cross_entropy, silent=True)
    text = str(learn.summary())
    assert "Optimized with 'torch.optim.sgd.SGD'\n" in text and 'Loss function : cross_entropy\n' in text
    import functools
    learn.opt_func = functools.partial(torch.optim.SGD, momentum=0.9, weight_decay=1e-4)
    learn.clip_grad(0.1)
    text = str(learn.summary())
    assert "'torch.optim.sgd.SGD', momentum=0.9, weight_decay=0.0001" in text
    assert 'Specifying weight decay in the optimizer has no effect' in text and text.endswith('    GradientClipping')
    empty = Learner(None, mlp())
    with pytest.raises(ValueError, match='empty `Learner`'): empty.summary()


def test_summary_keeps_random_state_and_mode():
    learn = tiny_learner(model=mlp(), silent=True)
    state = torch.get_rng_state()
    gen_state = learn.data.train_dl.generator.get_state()
    learn.model.train()
    learn.summary()
    assert torch.equal(state, torch.get_rng_state()) and torch.equal(gen_state, learn.data.train_dl.generator.get_state())
    assert learn.model.training


def test_split_rebuilds_optimizer_and_trains_groups():
    learn = tiny_learner(model=mlp(), silent=True)
    with quiet(): learn.fit(1, 1e-3)
    learn.split(lambda m: [m[2]])
    assert learn.opt.n_groups == 2
    with quiet(): learn.fit(1, slice(1e-4, 1e-2))
    assert [pg['lr'] for pg in learn.opt.param_groups][-1] == pytest.approx(1e-2)
    assert learn.split([[learn.model[0], learn.model[1]], [learn.model[2], learn.model[3]]]) is learn
    with pytest.raises(ArgumentError, match='never train'): learn.split([[learn.model[0]]])


def test_model_helpers():
    m = mlp()
    assert flatten_model(m) == list(m)
    requires_grad(m, False)
    assert requires_grad(m) is False and trainable_params(m) == []
    requires_grad(m, True)
    assert len(trainable_params(m)) == 6
    with pytest.raises(ArgumentError, match='x must be a tensor'): to_np([1, 2])
    with pytest.raises(ValueError, match='No weight layer'): in_channels(nn.ReLU())
    with pytest.raises(RuntimeError): num_features_model(m)
    assert num_features_model(nn.Sequential(nn.Conv2d(3, 32, 3), nn.AdaptiveAvgPool2d(1))) == 32

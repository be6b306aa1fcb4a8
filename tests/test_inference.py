"Predictions (issue: porting fastai v1 notebooks): DataBunch access, get_preds, pred_batch, predict, and a v1-style cell sequence."
import functools

import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fastcb_nb.all import *
from fastcb_nb.testing import Probe, quiet, tiny_learner

torch.set_num_threads(1)


def v1_setup(seed=0, loss_func=None, n_train=20, n_valid=10, test=False, **kwargs):
    "V1_BEYOND_TRAINING's setup: 20 train / 10 valid items, 4 features, 3 classes, bs 4, the MLP."
    g = torch.Generator().manual_seed(seed)
    ds = lambda n: TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g))
    data = DataBunch.create(ds(n_train), ds(n_valid), ds(7) if test else None, bs=4, device='cpu')
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 3))
    kwargs.setdefault('silent', True)
    return Learner(data, model, loss_func=loss_func or nn.CrossEntropyLoss(), **kwargs)


def test_databunch_create_and_access():
    learn = v1_setup(test=True)
    data = learn.data
    assert len(data.train_dl) == 5 and len(data.valid_dl) == 3 and len(data.test_dl) == 2
    assert data.dl(DatasetType.Test) is data.test_dl and learn.dl(DatasetType.Train) is data.train_dl
    assert len(data.train_ds) == 20 and len(data.valid_ds) == 10 and len(data.test_ds) == 7 and data.c is None
    x, y = data.one_batch()
    assert x.shape == (4, 4) and y.shape == (4,) and not x.requires_grad
    assert torch.equal(data.one_batch(DatasetType.Valid)[1], data.valid_ds.tensors[1][:4])
    data.batch_size = 5
    assert len(data.train_dl) == 4 and data.valid_dl.batch_size == 5 and len(data.fix_dl) == 4
    class Classes(TensorDataset): classes = ['a', 'b', 'c']
    assert DataBunch.create(Classes(torch.randn(8, 2), torch.zeros(8)), bs=4, device='cpu').c == 3
    with pytest.raises(ArgumentError, match='shuffle'): DataBunch.create(data.train_ds, shuffle=False)


def test_get_preds_shapes_dtypes_values_and_order():
    learn = v1_setup()
    preds, targs = learn.get_preds()
    x, y = learn.data.valid_ds.tensors
    learn.model.eval()
    assert torch.allclose(preds, F.softmax(learn.model(x), -1), atol=1e-6) and torch.equal(targs, y)
    assert preds.shape == (10, 3) and preds.dtype == torch.float32 and targs.dtype == torch.int64 and preds.device.type == 'cpu'
    preds, targs, losses = learn.get_preds(with_loss=True)
    assert losses.shape == (10,) and losses.dtype == torch.float32
    assert torch.allclose(losses, F.cross_entropy(learn.model(x), y, reduction='none'), atol=1e-6)
    assert abs(losses.mean().item() - learn.validate()[0]) < 1e-6
    assert learn.get_preds(n_batch=2)[0].shape == (8, 3) and learn.get_preds(n_batch=0)[0].shape == (10, 3)
    train_preds, train_targs = learn.get_preds(DatasetType.Train)   # shuffled, last partial batch dropped
    assert train_preds.shape == (20, 3)
    fix = learn.get_preds(DatasetType.Fix)[1]
    assert torch.equal(fix, learn.data.train_ds.tensors[1])
    assert learn.get_preds(DatasetType.Single)[0].shape == (10, 3)


def test_get_preds_activation_dtypes_and_losses_follow_v1():
    learn = v1_setup(loss_func=CrossEntropyFlat())
    assert torch.allclose(learn.get_preds()[0].sum(1), torch.ones(10))
    nll = v1_setup(loss_func=F.nll_loss)
    raw = nll.get_preds(activ=lambda o: o)[0]
    assert torch.allclose(nll.get_preds()[0], raw.exp())
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g, dtype=torch.float64), (torch.rand(8, 3, generator=g) > 0.5).to(torch.uint8)
    dl = DataLoader(TensorDataset(x, y), batch_size=4)
    multi = Learner(DataBunch(dl, dl, device='cpu'), nn.Identity(), loss_func=lambda o, t: F.binary_cross_entropy_with_logits(o, t.float()))
    p, t = multi.get_preds()
    assert p.dtype == torch.float32 and t.dtype == torch.float32 and torch.equal(p, x.float())   # a lambda: no activation
    bce = Learner(DataBunch(dl, dl, device='cpu'), nn.Identity(), loss_func=nn.BCEWithLogitsLoss())
    p, t, l = bce.get_preds(with_loss=False), None, None
    assert torch.allclose(p[0], torch.sigmoid(x.float()))
    reg = tiny_learner(task='regression', loss_func=nn.MSELoss(), silent=True)
    assert reg.get_preds(with_loss=True)[2].shape == (32, 2)     # nn.MSELoss unreduced: one loss per element
    assert reg.loss_func.reduction == 'mean'


def test_callbacks_see_batches_as_in_validation_and_learner_state_is_kept():
    learn = v1_setup(callback_fns=[ActivationStats])
    with quiet(): learn.fit(1, 1e-2)
    recorder, stats = learn.recorder, learn.activation_stats
    events = []
    class Spy(Callback):
        def on_train_begin(self, **kw): events.append('train_begin')
        def on_epoch_begin(self, **kw): events.append('epoch_begin')
        def on_batch_begin(self, train, **kw): events.append(('batch_begin', train))
        def on_loss_begin(self, **kw): events.append('loss_begin')
        def on_batch_end(self, train, last_loss, **kw): events.append(('batch_end', train, round(float(last_loss), 6)))
        def on_epoch_end(self, **kw): events.append('epoch_end')
    learn.callbacks.append(Spy())
    learn.model.train()
    _, _, losses = learn.get_preds(with_loss=True)
    assert [e for e in events if not isinstance(e, tuple) or e[0] != 'batch_end'] == [('batch_begin', False), 'loss_begin'] * 3
    batch_losses = [e[2] for e in events if isinstance(e, tuple) and e[0] == 'batch_end']
    assert np.allclose(batch_losses, [losses[:4].mean(), losses[4:8].mean(), losses[8:].mean()], atol=1e-5)
    assert learn.recorder is recorder and learn.activation_stats is stats and isinstance(stats.stats, torch.Tensor)
    assert learn.model.training and all(m.training for m in learn.model.modules())
    class Scale(Callback):      # a callback that changes the input changes the predictions
        def on_batch_begin(self, last_input, train, **kw): return {'last_input': last_input * 0}
    learn.callbacks = [Scale()]
    preds = learn.get_preds()[0]
    assert torch.allclose(preds, preds[:1].expand(10, 3))


def test_terminate_on_nan_callback_works_during_get_preds():
    learn = v1_setup()
    learn.callbacks.append(TerminateOnNaNCallback())
    assert learn.get_preds()[0].shape == (10, 3)    # v1: TypeError (last_loss was a tuple)


def test_get_preds_errors():
    learn = v1_setup()
    with pytest.raises(ValueError, match='no Test set'): learn.get_preds(DatasetType.Test)
    with pytest.raises(ArgumentError, match='ds_type'): learn.get_preds('valid')
    with pytest.raises(ArgumentError, match='n_batch'): learn.get_preds(n_batch=-1)
    with pytest.raises(ArgumentError, match='pbar'): learn.get_preds(pbar='yes')
    empty = DataBunch(learn.data.train_dl.dl, DataLoader(TensorDataset(torch.zeros(0, 4), torch.zeros(0)), batch_size=4), device='cpu')
    learn.data = empty
    with pytest.raises(ValueError, match='empty'): learn.get_preds()


def test_progress_bar_only_when_asked_or_long(monkeypatch):
    learn = v1_setup(silent=False)
    with quiet() as out: learn.get_preds()
    assert out.getvalue() == ''
    with quiet() as out: learn.get_preds(pbar=True)
    assert '[3/3' in out.getvalue()
    import fastcb_nb.inference as inf
    monkeypatch.setattr(inf._Progress.__init__, '__defaults__', (None, 0.))   # "long": after 0 seconds
    with quiet() as out: learn.get_preds()
    assert '[3/3' in out.getvalue()


def test_pred_batch_and_predict():
    learn = v1_setup()
    xb, yb = learn.data.one_batch(DatasetType.Valid)
    out = learn.pred_batch(batch=(xb, yb))
    assert out.shape == (4, 3) and out.device.type == 'cpu' and torch.allclose(out, learn.get_preds(n_batch=1)[0])
    assert torch.allclose(learn.pred_batch(), out)
    pred, probs = learn.predict(xb[1])
    assert isinstance(pred, int) and pred == int(out[1].argmax()) and torch.allclose(probs, out[1])
    two = Learner(learn.data, type('Two', (nn.Module,), {'forward': lambda self, a, b: a + b})(), loss_func=nn.MSELoss())
    pred, raw = two.predict((torch.ones(3), torch.ones(3)))
    assert torch.equal(pred, torch.full((3,), 2.))
    none = v1_setup(loss_func=functools.partial(F.poisson_nll_loss, log_input=False))
    assert none.pred_batch().shape == (4, 3)      # v1: TypeError ('NoneType' object is not callable)


def test_v1_notebook_sequence():
    "A v1-style cell sequence, unchanged but for imports and data: build, lr_find, fit_one_cycle, get_preds, summary(), ActivationStats plotted."
    torch.manual_seed(0)
    data = synthetic_data(n_train=256, n_valid=64, n_in=4, n_out=3, bs=16, device='cpu')
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.BatchNorm1d(32), nn.Linear(32, 3))
    learn = Learner(data, model, loss_func=CrossEntropyFlat(), metrics=[accuracy], callback_fns=[ActivationStats])
    with quiet():
        learn.lr_find()
        learn.recorder.plot(return_fig=True)
        learn.fit_one_cycle(3, 1e-2)
    preds, y = learn.get_preds()
    acc = accuracy(preds, y)
    assert preds.shape == (64, 3) and abs(float(acc) - learn.recorder.metrics[-1][0]) < 1e-6 and acc > 0.8
    s = learn.summary()
    assert 'Total params: 323' in str(s) and s._repr_html_().startswith('<div>')
    stats = learn.activation_stats.stats
    assert stats.shape == (2, 3, 3 * 16)
    fig = learn.activation_stats.plot(return_fig=True)
    assert type(fig).__name__ == 'Figure'
    interp_preds, interp_y, losses = learn.get_preds(with_loss=True)
    top = losses.topk(5).indices
    assert (interp_preds[top].argmax(1) != interp_y[top]).any() or acc == 1

"MixUp and StopAfterNBatches: the loss is restored after fit (also after an exception), draws as v1, training counts."
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastcb_nb.all import *
from fastcb_nb.testing import Probe, RaiseAt, quiet, tiny_learner

torch.set_num_threads(1)


def test_loss_restored_after_fit_and_exception():
    learn = tiny_learner(silent=True)
    loss = learn.loss_func
    learn.mixup()
    with quiet(): learn.fit(1, 1e-3)
    assert learn.loss_func is loss and loss.reduction == 'mean'
    with pytest.raises(KeyboardInterrupt):
        with quiet(): learn.fit(1, 1e-3, callbacks=[RaiseAt(1, exc=KeyboardInterrupt())])
    assert learn.loss_func is loss and loss.reduction == 'mean'
    fn = tiny_learner(loss_func=F.cross_entropy, silent=True).mixup()
    with quiet(): fn.fit(1, 1e-3)
    assert fn.loss_func is F.cross_entropy


def test_training_sees_mixed_batches_validation_does_not():
    learn = tiny_learner(silent=True).mixup(alpha=0.4)
    seen = Probe('on_loss_begin', lambda last_target, train, **kw: (train, tuple(last_target.shape), last_target.dtype))
    with quiet(): learn.fit(1, 1e-3, callbacks=[seen])
    assert set(s for s in seen.seen if s[0]) == {(True, (16, 3), torch.float32)}
    assert set(s for s in seen.seen if not s[0]) == {(False, (16,), torch.int64)}
    # the validation loss inside fit is the plain loss: it equals a later validate()
    assert abs(learn.recorder.val_losses[-1] - learn.validate()[0]) < 1e-6


def test_lambda_mean_and_range():
    learn = tiny_learner(silent=True)
    cb = MixUpCallback(learn, alpha=0.4)
    np.random.seed(1); torch.manual_seed(1)
    lams = torch.cat([cb.on_batch_begin(torch.randn(1000, 2), torch.zeros(1000, dtype=torch.long), train=True)['last_target'][:, 2]
                      for _ in range(20)])
    assert lams.min() >= 0.5 and lams.max() <= 1 and abs(lams.mean().item() - 0.840) < 0.01


def test_refused_inputs():
    learn = tiny_learner(silent=True)
    with pytest.raises(ValueError, match='stack_x=True'):
        MixUpCallback(learn).on_batch_begin(torch.arange(8).view(4, 2), torch.zeros(4, dtype=torch.long), train=True)
    with pytest.raises(ValueError, match='stack_y=False'):
        MixUpCallback(learn).on_batch_begin(torch.randn(4, 2), torch.zeros(4, 3), train=True)
    with pytest.raises(ArgumentError, match='alpha'): learn.mixup(alpha=0)
    with pytest.raises(ArgumentError, match='reduction'): MixUpLoss(F.cross_entropy, reduction='avg')


def test_mixup_loss_activation_and_get_preds():
    learn = tiny_learner(silent=True).mixup()
    with quiet(): learn.fit(1, 1e-3)
    for lf in (MixUpLoss(torch.nn.CrossEntropyLoss()), MixUpLoss(F.cross_entropy), MixUpLoss(CrossEntropyFlat())):
        learn.loss_func = lf
        preds = learn.get_preds()[0]
        assert torch.allclose(preds.sum(1), torch.ones(32))    # softmax (v1: none for the last two)


@pytest.mark.parametrize('n, nb_batches, validated', [(2, [2], [False]), (4, [4], [False]), (5, [4, 1], [True, False]),
                                                     (8, [4, 4], [True, False]), (12, [4, 4, 4], [True, True, False])])
def test_stop_after_n_batches(n, nb_batches, validated):
    learn = tiny_learner(silent=True)
    seen = Probe('on_batch_end', lambda train, **kw: train)
    with quiet(): learn.fit(3, 1e-3, callbacks=[StopAfterNBatches(n), seen])
    assert learn.recorder.nb_batches == nb_batches and [v is not None for v in learn.recorder.val_losses] == validated
    assert sum(seen.seen) == n and len(seen.seen) - n == 2 * sum(validated)     # whole validations only

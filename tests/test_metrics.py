"v1 metrics: the functions and callback metrics against the reference values of V1_BEYOND_TRAINING §16 and scikit-learn, run through Learner.validate and fit."
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastcb_nb.learner import Learner, DataBunch
from fastcb_nb.metrics import *
from fastcb_nb.testing import quiet, tiny_learner

sk = pytest.importorskip('sklearn.metrics', reason='scikit-learn is a test-only dependency (dev extras)')
torch.set_num_threads(1)

B = torch.tensor([[2., 0], [0, 1], [1, .5], [0, 2], [0, .3], [0, .2], [1, 2], [3, 0]]); By = torch.tensor([0, 1, 1, 1, 0, 0, 1, 0])
L = torch.tensor([[2., 1, 0], [0, 3, 1], [1, 0, 2], [.5, 1.5, 0], [2, 0, 1], [0, 0, 3]]); Ly = torch.tensor([0, 1, 1, 1, 2, 2])
M = torch.tensor([[1., -1, .5], [-2, 2, -.5], [0, 1, -1], [3, -3, .2]]); My = torch.tensor([[1., 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]])
Rp, Rt = torch.tensor([1., 2, 3, 4]), torch.tensor([1.5, 1.5, 3.5, 3])


def identity_learner(x, y, bs=3, loss_func=None):
    "A learner whose model returns its input: validation outputs are `x`, in batches of `bs` (as the reference measured)."
    dl = DataLoader(TensorDataset(x, y), batch_size=bs)
    loss = loss_func or (lambda out, t: (out.float() - out.float()).sum())
    return Learner(DataBunch(dl, dl, device='cpu'), nn.Identity(), loss_func=loss, silent=True)


def validate(x, y, metrics, bs=3):
    return identity_learner(x, y, bs).validate(metrics=metrics)[1:]


def approx(a, b, tol=1e-5):
    return np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), atol=tol, rtol=0)


@pytest.mark.parametrize('average', ['binary', 'macro', 'micro', 'weighted', None])
def test_precision_recall_fbeta_match_sklearn(average):
    for x, y in ((B, By), (L, Ly)):
        if average == 'binary' and y is Ly: continue
        pred = x.argmax(-1).numpy()
        got = validate(x, y, [Precision(average=average), Recall(average=average), FBeta(average=average, beta=2)])
        want = [sk.precision_score(y, pred, average=average, zero_division=0),
                sk.recall_score(y, pred, average=average, zero_division=0),
                sk.fbeta_score(y, pred, beta=2, average=average, zero_division=0)]
        assert approx(got, np.concatenate([np.atleast_1d(w) for w in want])), (average, got, want)


def test_reference_values_through_validate():
    assert approx(validate(B, By, [Precision(), Recall(), FBeta(), MatthewsCorreff(), KappaScore('linear'), AUROC()]),
                  [0.6, 0.75, 0.714286, 0.258199, 0.25, 0.875])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert approx(validate(L, Ly, [Precision(), FBeta()]), [0.666667, 0.682540])
    assert approx(validate(L, Ly, [MatthewsCorreff(), KappaScore('quadratic')]), [0.522233, 0.285714])
    assert approx(validate(Rp.view(4, 1), Rt, [R2Score(), ExplainedVariance(), RMSE(), ExpRMSPE()]),
                  [0.450980, 0.470588, 0.661438, 0.959553])
    assert approx(validate(M, My, [MultiLabelFbeta()]), [0.972222])


def test_scores_match_sklearn():
    pred = L.argmax(-1).numpy()
    assert approx(validate(L, Ly, [MatthewsCorreff()]), [sk.matthews_corrcoef(Ly, pred)])
    for w in (None, 'linear', 'quadratic'):
        assert approx(validate(L, Ly, [KappaScore(w)]), [sk.cohen_kappa_score(Ly, pred, weights=w)]), w
    probs = torch.softmax(B, 1)[:, 1].numpy()
    assert approx(validate(B, By, [AUROC()]), [sk.roc_auc_score(By, probs)])
    scores, t = torch.tensor([.9, .2, .6, .4, .7, .1, .6, .2]), torch.tensor([1, 0, 1, 0, 0, 1, 0, 1])   # with ties
    assert approx(auc_roc_score(scores, t), sk.roc_auc_score(t, scores))
    p, r = Rp.numpy(), Rt.numpy()
    assert approx(validate(Rp.view(4, 1), Rt, [R2Score(), ExplainedVariance(), RMSE()]),
                  [sk.r2_score(r, p), sk.explained_variance_score(r, p), np.sqrt(sk.mean_squared_error(r, p))])
    assert approx(mean_absolute_error(Rp, Rt), sk.mean_absolute_error(r, p))
    assert approx(mean_squared_logarithmic_error(Rp, Rt), sk.mean_squared_log_error(r, p))
    my_pred = (torch.sigmoid(M) > 0.3).numpy()
    for avg in ('micro', 'macro', 'weighted'):
        assert approx(validate(M, My, [MultiLabelFbeta(average=avg)]), [sk.fbeta_score(My, my_pred, beta=2, average=avg)], 1e-4)
    cm = ConfusionMatrix()
    validate(L, Ly, [cm])
    assert cm.cm.tolist() == sk.confusion_matrix(Ly, pred).tolist()


def test_function_metrics_averaged_by_batch_as_v1():
    "Averaged over batches of 3 + 1, the non-linear functions are not their whole-set values (the reason for RMSE, R2Score)."
    got = validate(Rp.view(4, 1), Rt, [root_mean_squared_error, mean_squared_error, r2_score])
    assert approx(got[:2], [0.625, 0.4375]) and got[2] == -np.inf


def test_never_predicted_class_scores_zero_not_nan():
    out, t = torch.eye(3)[[0, 1, 0]], torch.tensor([0, 1, 2])
    got = validate(out, t, [Precision(average='macro'), Recall(average='macro'), FBeta(average='macro')])
    assert approx(got, [0.5, 0.666667, 0.611111])
    assert approx(got[0], sk.precision_score(t, [0, 1, 0], average='macro', zero_division=0))


def test_fbeta_average_survives_validate_and_fit():
    "v1's FBeta lost its average after a validate (the next results were per-class vectors)."
    f, learn = FBeta(), identity_learner(B, By)
    assert approx(learn.validate(metrics=[f])[1:], [0.714286])
    assert approx(learn.validate(metrics=[f])[1:], [0.714286]) and f.average == 'binary'


def test_column_names_and_confusion_matrix_in_fit():
    learn = tiny_learner(metrics=[ConfusionMatrix(), accuracy, FBeta(beta=1), MatthewsCorreff()], silent=True)
    with quiet(): learn.fit(2, 1e-2)
    rec = learn.recorder
    assert rec.names == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'f_beta', 'matthews_correff', 'time']
    assert len(rec.metrics) == 2 and all(len(row) == 3 and all(isinstance(v, float) for v in row) for row in rec.metrics)
    cm = learn.metrics[0].cm
    assert cm.shape == (2, 2) and cm.sum() == 32      # the whole validation set
    preds = []
    learn.model.eval()
    with torch.no_grad():
        for xb, yb in learn.data.valid_dl: preds.append((learn.model(xb).argmax(-1), yb))
    p, t = (torch.cat(o) for o in zip(*preds))
    assert approx(rec.metrics[-1][0], (p == t).float().mean()) and cm.tolist() == sk.confusion_matrix(t, p).tolist()
    assert approx(rec.metrics[-1][1], sk.f1_score(t, p)) and approx(rec.metrics[-1][2], sk.matthews_corrcoef(t, p))


def test_bad_arguments_are_refused():
    for make, name in ((lambda: Precision(average='samples'), 'average'), (lambda: Recall(pos_label=2), 'pos_label'),
                       (lambda: FBeta(beta=0), 'beta'), (lambda: KappaScore('cubic'), 'weights'),
                       (lambda: MultiLabelFbeta(thresh='x'), 'thresh'), (lambda: top_k_accuracy(L, Ly, k=0), 'k')):
        with pytest.raises(ValueError, match=name): make()
    with pytest.raises(ValueError, match='2 classes'): validate(L, Ly, [AUROC()])

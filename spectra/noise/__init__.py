"""``spectra noise``: per-layer gradient noise scale of a task's model, measured or read off an optimizer.

Two sources, labelled in the result's ``source`` field:

* ``gradients`` (:func:`measure_noise`): draw ``batches`` batches of size B from the task's train
  loader; on each, with the model fixed in eval mode, take the gradients of ``B // b`` micro-batches of
  size b (or of every example, via ``torch.func``, with ``per_example=True``: b = 1). The mean squared
  micro-batch norm and the squared norm of their mean give the unbiased two-batch estimates of |G|^2
  and tr(Sigma) per parameter (McCandlish et al. 2018, App. A.1; :mod:`spectra.core.noise`). Rounds
  are averaged (numerators and denominators separately), parameters summed into layers, layers
  summed into the global B_simple = tr(Sigma) / |G|^2.
* ``optimizer-proxy`` (:func:`optimizer_noise`): no data, a heuristic from Adam's stored moments
  (``exp_avg``, ``exp_avg_sq``); optimizer ids are matched to parameter names by order and shape.

A layer is a weight tensor (2-D and up) with its attached biases and norm weights
(:func:`spectra.layers.attach_vectors`); depth comes from :func:`spectra.layers.assign_depths`.
"""

from .measure import layer_groups, measure_noise
from .proxy import optimizer_noise
from .result import NOISE_SCHEMA, LayerNoise, NoiseResult
from .weights import load_weights, resolve_device

__all__ = ["NOISE_SCHEMA", "LayerNoise", "NoiseResult", "measure_noise", "optimizer_noise", "layer_groups",
           "load_weights", "resolve_device"]

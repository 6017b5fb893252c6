"""The one place fairloop uses Fairlearn's private API, because Fairlearn 0.15 has no public one for:

- the probability that a randomised mitigator (ExponentiatedGradient, ThresholdOptimizer) decides 1:
  the private ``_pmf_predict`` (:func:`randomized_positive_rate`);
- the positive-class score of an AdversarialFairnessClassifier: the private ``_raw_predict``
  (:func:`adversarial_scores`);
- a PyTorch backend whose networks pickle (a promoted model is a file): a subclass of the private
  ``fairlearn.adversarial._pytorch_engine.PytorchEngine`` (:class:`PicklableTorchEngine`).

pyproject pins fairlearn to 0.15.x; tests/test_fairlearn_adapter.py pins what these rely on against the
installed version, so an upgrade that changes any of them fails there, not in a run.

torch (the optional extra fairloop[adversarial]) is imported only for an adversarial model.
"""

from __future__ import annotations

import numpy as np
from fairlearn.adversarial._pytorch_engine import PytorchEngine


def adversarial_scores(estimator, matrix: np.ndarray) -> np.ndarray:
    """P(y = 1) of a Fairlearn AdversarialFairnessClassifier: its predictor network's sigmoid
    output. Fairlearn 0.15 has no ``predict_proba`` for it; this is the one place that calls the
    private ``_raw_predict`` (tests/test_candidate_conformance.py checks it against ``predict``)."""
    raw_predict = getattr(estimator, "_raw_predict", None)
    if raw_predict is None:
        raise RuntimeError(f"{type(estimator).__name__} has no _raw_predict: Fairlearn changed its private API")
    return np.asarray(raw_predict(matrix), dtype=float).reshape(len(matrix), -1)[:, -1]


def randomized_positive_rate(estimator, matrix: np.ndarray, **kwargs) -> np.ndarray:
    """P(predict = 1) of a Fairlearn ExponentiatedGradient or ThresholdOptimizer.

    Fairlearn 0.15 has no public API for it: this is the one place that calls the private
    ``_pmf_predict`` (tests/test_fairlearn_adapter.py checks it against the randomised predictions,
    so a Fairlearn upgrade that changes it fails loudly).
    """
    pmf_predict = getattr(estimator, "_pmf_predict", None)
    if pmf_predict is None:
        raise RuntimeError(f"{type(estimator).__name__} has no _pmf_predict: Fairlearn changed its private API")
    # a weighted sum of predictors' outputs: float error can land at 1 + 2e-16
    return np.clip(np.asarray(pmf_predict(matrix, **kwargs))[:, 1], 0.0, 1.0)


class PicklableTorchEngine(PytorchEngine):
    """Fairlearn's PyTorch backend with its networks built as ``torch.nn.Sequential``, the same
    layers and initialisation: the stock engine defines its network class inside a function,
    which pickle cannot store, and a promoted model must be a file. Fairlearn takes a backend
    class as ``backend``; the engine it extends is private (tests/test_candidate_conformance.py
    round-trips the model through a file, so an upgrade that changes it fails there).

    It also seeds torch from ``random_state``: Fairlearn 0.15 calls ``torch.manual_seed`` with a
    float in [0, 1), which torch truncates to 0, so every seed gave the same initial weights and
    shuffles. The first network built (the predictor) reseeds torch with an integer drawn from the
    classifier's seeded generator."""

    def get_model(self, list_nodes):
        import torch

        if not getattr(self, "_seeded", False):
            torch.manual_seed(int(self.base.random_state_.randint(2**31 - 1)))
            self._seeded = True

        activations = {"leaky_relu": torch.nn.LeakyReLU, "sigmoid": torch.nn.Sigmoid,
                       "softmax": lambda: torch.nn.Softmax(dim=-1)}
        layers, width = [], None
        for item in list_nodes:
            if isinstance(item, int):
                if width is not None:
                    layers.append(torch.nn.Linear(width, item))
                width = item
            else:
                layers.append(activations[item]())
        network = torch.nn.Sequential(*layers)
        for layer in network:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(layer.weight)
                layer.bias.data.fill_(0.0)
        return network

"""Pins the private Fairlearn API that :mod:`fairloop.remedy.fairlearn_adapter` uses against the installed
Fairlearn: an upgrade that changes it fails here (``adversarial_scores`` is pinned with a fitted
candidate in tests/test_candidate_conformance.py)."""

import pickle
from importlib.metadata import version

import numpy as np
import pytest
from fairlearn.postprocessing import ThresholdOptimizer
from fairlearn.reductions import DemographicParity, ExponentiatedGradient
from sklearn.linear_model import LogisticRegression

from fairloop.remedy.fairlearn_adapter import PicklableTorchEngine, randomized_positive_rate


def test_the_installed_fairlearn_is_the_version_the_adapter_was_written_for():
    assert version("fairlearn").startswith("0.15."), "re-check fairloop.remedy.fairlearn_adapter against this Fairlearn"


def test_fairlearn_private_probability_api_still_matches_its_predictions():
    """``randomized_positive_rate`` is the one use of Fairlearn's private ``_pmf_predict``:
    if an upgrade changes it, this fails (its rate must match the randomised decisions)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    groups = rng.choice(["a", "b"], size=600)
    y = (X[:, 0] + (groups == "a") + rng.normal(size=600) > 0.5).astype(int)
    eg = ExponentiatedGradient(LogisticRegression(), DemographicParity(difference_bound=0.01)).fit(
        X, y, sensitive_features=groups)
    to = ThresholdOptimizer(estimator=LogisticRegression(), constraints="demographic_parity",
                            predict_method="predict_proba").fit(X, y, sensitive_features=groups)
    for estimator, kwargs in ((eg, {}), (to, {"sensitive_features": groups})):
        rate = randomized_positive_rate(estimator, X, **kwargs)
        assert rate.shape == (600,) and ((0 <= rate) & (rate <= 1)).all()
        draws = np.mean([estimator.predict(X, random_state=seed, **kwargs) for seed in range(200)], axis=0)
        assert np.abs(draws - rate).max() < 0.15 and abs(draws.mean() - rate.mean()) < 0.01


def test_the_picklable_torch_engine_extends_fairlearns_private_engine_and_pickles():
    """A promoted adversarial model is a file: the engine's networks must survive pickle."""
    torch = pytest.importorskip("torch")
    from fairlearn.adversarial._pytorch_engine import PytorchEngine

    assert issubclass(PicklableTorchEngine, PytorchEngine)
    engine = PicklableTorchEngine.__new__(PicklableTorchEngine)
    engine._seeded = True  # torch's seed is the classifier's business; none here
    network = engine.get_model([3, "leaky_relu", 4, 1, "sigmoid"])
    copy = pickle.loads(pickle.dumps(network))
    rows = torch.ones(2, 3)
    assert torch.equal(copy(rows), network(rows))

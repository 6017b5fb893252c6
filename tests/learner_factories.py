"""Learners a template can name by import path in tests (``learner_factories.NAME``): a factory
returning a scikit-learn Pipeline, as a platform team's own model code might be."""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures


def interactions_logistic(C: float = 1.0, random_state: int | None = None) -> Pipeline:
    """Pairwise interactions, then logistic regression: its fit takes weights as ``model__sample_weight``."""
    return Pipeline([("interactions", PolynomialFeatures(degree=2, interaction_only=True, include_bias=False)),
                     ("model", LogisticRegression(C=C, max_iter=1000, random_state=random_state))])

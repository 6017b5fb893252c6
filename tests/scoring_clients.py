"""Scoring callables reached by import path (``remediate --model scoring_clients:NAME``), as a
client of a vendor's scoring endpoint would be: a DataFrame of features in, scores out."""

from __future__ import annotations

import numpy as np
from scipy.special import expit


def proxy_rule(frame):
    """A fixed vendor rule that leans on the proxy x3 of the generated data's group."""
    return expit(frame["x1"].to_numpy() + 0.5 * frame["x2"].to_numpy() + 1.5 * frame["x3"].to_numpy() - 1.0)


def one_score_too_many(frame):
    return np.full(len(frame) + 1, 0.5)


def log_odds(frame):
    return frame["x1"].to_numpy() * 3.0  # not probabilities


NOT_CALLABLE = 3

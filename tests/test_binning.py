"""fairloop.remedy.binning against scikit-learn: an unweighted HistGradientBoosting fit on the
binned columns is the fit on the raw columns (same trees, same probabilities), missing values,
columns with few and with many distinct values, and rows unseen at fit included."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from fairloop.remedy.binning import MAX_BINS, QuantileBins
from fairloop.remedy.learners import make_preprocessor


def frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "continuous": rng.normal(size=rows),  # far more than 255 distinct values
        "skewed": rng.lognormal(size=rows) * 1000,
        "few": rng.integers(0, 12, rows).astype(float),  # midpoints, not percentiles
        "constant": np.ones(rows),
    })
    X.loc[rng.random(rows) < 0.05, "continuous"] = np.nan  # missing values stay missing
    y = (X["continuous"].fillna(0) + 0.002 * X["skewed"] + 0.2 * X["few"] + rng.normal(size=rows) > 1.5).astype(int)
    return X, y.to_numpy()


def test_an_unweighted_fit_on_the_bins_is_the_fit_on_the_raw_columns():
    X, y = frame(3000, 0)
    fresh, _ = frame(1000, 1)
    binner = QuantileBins().fit(X)
    binned = binner.transform(X)
    assert np.isnan(binned[:, 0]).sum() == X["continuous"].isna().sum()
    assert all(len(np.unique(binned[~np.isnan(binned[:, j]), j])) <= MAX_BINS for j in range(X.shape[1]))
    raw = HistGradientBoostingClassifier(random_state=0).fit(X.to_numpy(), y)
    on_bins = HistGradientBoostingClassifier(random_state=0).fit(binned, y)
    np.testing.assert_allclose(on_bins.predict_proba(binned), raw.predict_proba(X.to_numpy()), rtol=0, atol=1e-12)
    np.testing.assert_allclose(on_bins.predict_proba(binner.transform(fresh)), raw.predict_proba(fresh.to_numpy()),
                               rtol=0, atol=1e-12)


def test_the_native_preprocessor_bins_numerics_and_keeps_names_and_codes():
    X, _ = frame(500, 2)
    X["colour"] = np.where(np.arange(500) % 3 == 0, "red", "blue")
    preprocessor = make_preprocessor("native", ["continuous", "skewed", "few", "constant"], ["colour"])
    matrix = preprocessor.fit_transform(X)
    assert list(preprocessor.get_feature_names_out()) == ["colour", "continuous", "skewed", "few", "constant"]
    assert set(np.unique(matrix[:, 0])) == {0.0, 1.0}
    assert np.nanmax(matrix[:, 1:]) < MAX_BINS and np.nanmin(matrix[:, 1:]) >= 0

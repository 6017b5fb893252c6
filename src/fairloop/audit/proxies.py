"""Proxies: how well each feature alone predicts each sensitive feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import normalized_mutual_info_score

from fairloop.audit.onefeature import cross_fitted_auc, feature_codes, sample_positions
from fairloop.audit.record import Finding, ProxyScore, shortlist
from fairloop.data.dataset_spec import DatasetSpec
from fairloop.data.rows import Split

PROXY_METHOD = (
    "ROC AUC of a one-feature model: the feature's values (numeric ones in 20 quantile bins) target-encoded "
    "for the sensitive feature with 5-fold cross-fitting (sklearn TargetEncoder), scored out of fold; "
    "multi-group features use one-vs-rest AUC weighted by group size. NMI: sklearn normalized_mutual_info_score."
)


def proxy_scores(spec: DatasetSpec, split: Split, sensitive: str, seed: int) -> tuple[list[ProxyScore], int]:
    """How well each feature alone predicts ``sensitive``; rows beyond audit.proxy_sample_rows are
    subsampled (seeded, stratified by group). Returns scores, best first, and the rows used."""

    settings = spec.audit
    groups = split.groups[sensitive].astype(str)
    positions = sample_positions(groups.to_numpy(), settings.proxy_sample_rows, seed)
    # Integer codes throughout: sklearn's checks on string arrays (np.unique of objects) cost more than the models.
    target, _ = pd.factorize(groups.iloc[positions], sort=True)
    if len(np.unique(target)) < 2:
        return [], len(positions)
    scores = []
    own_column = spec.sensitive_named(sensitive).column  # with use_as_feature it is a feature: it predicts itself
    for column in spec.features.columns:
        if column == own_column:
            continue
        numeric = column in spec.features.numeric
        codes = feature_codes(split.X[column].iloc[positions], numeric)
        auc = cross_fitted_auc(codes, target, seed)
        distinct = len(np.unique(codes))
        # NMI rises with the number of categories whatever they mean: not reported for identifier-like columns
        nmi = None if distinct > settings.max_categories else float(normalized_mutual_info_score(target, codes))
        scores.append(ProxyScore(sensitive=sensitive, feature=column, kind="numeric" if numeric else "categorical",
                                 auc=round(auc, 4), nmi=None if nmi is None else round(nmi, 4),
                                 flagged=auc >= settings.proxy_auc_threshold))
    return sorted(scores, key=lambda s: (-s.auc, s.feature)), len(positions)


def _proxy_finding(sensitive: str, scores: list[ProxyScore], spec: DatasetSpec, sample_rows: int, rows: int) -> Finding | None:
    flagged = [s for s in scores if s.flagged]
    if not flagged:
        return None
    sample = f"a seeded sample of {sample_rows:,} of {rows:,} rows" if sample_rows < rows else f"all {rows:,} rows"
    listed = [f"{s.feature} (AUC {s.auc:.3f}" + (f", NMI {s.nmi:.3f})" if s.nmi is not None else ")") for s in flagged]
    return Finding(
        severity="warn", check="proxy", column=flagged[0].feature, value=f"{flagged[0].auc:.3f}",
        message=(f"proxies of sensitive '{sensitive}': {shortlist(listed)} alone predict it with AUC >= "
                 f"{spec.audit.proxy_auc_threshold} (audit.proxy_auc_threshold; {sample}); removing '{sensitive}' "
                 "does not remove what they encode"),
    )


def audit_proxies(spec: DatasetSpec, split: Split) -> tuple[list[ProxyScore], int, list[Finding]]:
    """Proxy scores of every sensitive feature, the rows they were computed on, and a finding per
    sensitive feature that has proxies."""
    proxies: list[ProxyScore] = []
    findings: list[Finding] = []
    sample_rows = 0
    for s in spec.sensitive:
        scores, sample_rows = proxy_scores(spec, split, s.name, spec.split.seed)
        proxies += scores
        finding = _proxy_finding(s.name, scores, spec, sample_rows, len(split))
        if finding is not None:
            findings.append(finding)
    return proxies, sample_rows, findings

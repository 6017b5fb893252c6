"""What a drift rerun is trained and judged on: the alerting window's rows, pinned, split and weighted.

A rerun started by a drift alert must be judged on the distribution that alerted, not only on
the old test split: a model that meets the policy there can still breach on the rows that
alerted. So the rerun

1. **pins** its window(s): copies them into its run folder under their SHA-256 when it starts,
   so window retention (``monitoring.keep_window_rows``) or a new revision of the window
   cannot take them away while the run awaits review (``pin_windows``);
2. **splits** their rows, seeded and stratified by group x label (unknown labels a stratum of
   their own), into rows it may train on and held-out rows it is judged on
   (``split_drifted``, recorded in lineage as ``DriftedRows``);
3. **trains for the new distribution**: the training rows (old pool plus the drifted training
   part) are redrawn with importance weights towards the drifted distribution, P(drifted | row)
   from a classifier of old vs drifted rows over features, group and label, clipped at
   ``max_weight`` times the mean (``towards_drifted``). Redrawing instead of passing ``sample_weight`` works
   with every recipe, learner and Fairlearn reduction (reductions take no sample weights);
4. is **judged on the held-out drifted rows** with the monitor's fairness gaps (the prediction-
   rate gap needs no labels, so unlabelled rows count; equalized odds only on labelled rows) and
   the gates' bootstrap intervals; the answer to "does approving clear the alert?" is yes
   (every gap's interval below its threshold), no (one above) or cannot tell yet, with how many
   more rows would tell (``judge_on_drifted``).

Plain functions on the project's row containers and pydantic records; the flow calls them.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from fairloop.data.dataset_spec import DatasetSpec
from fairloop.data.datasets import file_sha256
from fairloop.data.rows import Rows, Split
from fairloop.data.splits import Weighting
from fairloop.errors import BadInputError
from fairloop.gates.decidability import rows_factor
from fairloop.gates.metrics import GROUP_METRICS
from fairloop.gates.policy import GateResult, Policy, RerunSettings, verdict_of
from fairloop.monitor.fairness import (
    labelled_metrics,
    prediction_rate_gap,
    selection_rates,
)
from fairloop.monitor.report import Metric
from fairloop.monitor.store import write_window_file
from fairloop.monitor.windows import read_window
from fairloop.remedy.learners import make_preprocessor

DRIFT_GATE_PREFIX = "on drifted rows: "
# the gated gaps a rerun is judged on: the prediction-rate gap, and the labelled gaps of the metric table
LABELLED_KINDS = tuple(m.name for m in GROUP_METRICS if m.needs_labels)
FAIRNESS_KINDS = ("prediction_rate_gap", *LABELLED_KINDS)
Clears = Literal["yes", "no", "cannot tell yet"]


class PinnedWindow(BaseModel):
    """A window file a rerun copied into its run folder when it started (named by its SHA-256)."""

    source: str = Field(description="the monitor's window file the copy was made from")
    path: str
    sha256: str
    rows: int
    labelled: int


class DriftedRows(BaseModel):
    """How a rerun used the rows of the window(s) that alerted (lineage)."""

    windows: list[PinnedWindow]
    held_out_share: float
    seed: int
    train_file: str = Field(description="the labelled rows the rerun trains on, in the dataset's raw format")
    train_rows: int
    held_out_file: str = Field(description="the rows the rerun is judged on (labels where known)")
    held_out_rows: int
    held_out_labelled: int
    weighting: Literal["density_ratio", "none"]
    max_weight: float


def pin_windows(spec: DatasetSpec, sources: list[Path], folder: Path) -> list[PinnedWindow]:
    """Copy each window file into ``folder/windows/<sha256>.csv`` (content-addressed) and check the
    copy parses with the dataset's spec. A file that is gone or unreadable is a BadInputError:
    the rerun ends Refused with that reason."""
    pinned = []
    target = folder / "windows"
    target.mkdir(parents=True, exist_ok=True)
    for source in sources:
        try:
            digest = file_sha256(source)
            copy = target / f"{digest}.csv"
            shutil.copyfile(source, copy)
        except OSError as exc:
            raise BadInputError(f"cannot pin window file {source}: {exc.strerror or exc}", source=str(source)) from None
        if file_sha256(copy) != digest:  # changed while being copied (a monitor revision in progress)
            copy.unlink()
            raise BadInputError(f"window file {source} changed while the rerun copied it", source=str(source))
        rows = read_window(spec, copy)
        pinned.append(PinnedWindow(source=str(source), path=str(copy), sha256=digest, rows=len(rows),
                                   labelled=0 if rows.y is None else int(rows.y.notna().sum())))
    return pinned


def concat_rows(parts: list[Rows]) -> Rows:
    """The rows of several windows one after the other (parsed and raw; no predictions or memo)."""
    join = lambda frames: pd.concat(frames, ignore_index=True)  # noqa: E731
    labels = [p.y if p.y is not None else pd.Series(np.nan, index=p.X.index, name="label") for p in parts]
    return Rows(X=join([p.X for p in parts]), groups=join([p.groups for p in parts]), y=join(labels),
                raw=join([p.raw for p in parts]) if all(p.raw is not None for p in parts) else None)


def split_drifted(spec: DatasetSpec, pinned: list[PinnedWindow], settings: RerunSettings, *, seed: int, sensitive: str,
                  folder: Path) -> DriftedRows:
    """Split the pinned windows' rows into a training part (labelled rows only) and held-out rows,
    stratified by group x label; both are written to ``folder`` in the dataset's raw format."""

    rows = concat_rows([read_window(spec, p.path) for p in pinned])
    label = rows.y.map(lambda v: "?" if v != v else str(int(v)))
    strata = rows.groups[sensitive].astype(str) + "|" + label
    stratify = strata if len(strata) and strata.value_counts().min() >= 2 else None
    positions = np.arange(len(rows))
    if len(rows) < 2:
        raise BadInputError(f"the alerting window(s) hold {len(rows)} row(s): too few to train and judge a rerun on")
    train_at, held_at = train_test_split(positions, test_size=settings.held_out_share, random_state=seed, stratify=stratify)
    train, held = rows.take(np.sort(train_at)), rows.take(np.sort(held_at))
    train = train.take(np.flatnonzero(train.y.notna().to_numpy()))  # unlabelled rows cannot be trained on
    if len(train) == 0:
        raise BadInputError("the alerting window(s) have no labelled row to train on outside the held-out share "
                            f"({settings.held_out_share:.0%} held out); the rerun is judged on them, but it cannot learn from them")
    train_file = write_window_file(spec, train, folder / "drifted-train.csv")
    held_file = write_window_file(spec, held, folder / "drifted-held-out.csv")
    return DriftedRows(
        windows=pinned, held_out_share=settings.held_out_share, seed=seed, train_file=str(train_file),
        train_rows=len(train), held_out_file=str(held_file), held_out_rows=len(held),
        held_out_labelled=int(held.y.notna().sum()), weighting=settings.weighting, max_weight=settings.max_weight,
    )


def _domain_matrix(split: Split) -> pd.DataFrame:
    """Features, groups and label as one table: the old-vs-drifted classifier sees the label too, so
    a shift of base rates within a group (label shift) is weighted, not only shifts of features."""
    return pd.concat([split.X, split.groups.add_prefix("sensitive.").astype(str), split.y.astype(str).rename("label")],
                     axis=1)


def towards_drifted(old: Split, drifted: Split, method: Literal["density_ratio", "none"], *, seed: int,
                    max_weight: float) -> tuple[Split, Weighting]:
    """The training rows of a rerun: ``old`` (the dataset's training split) plus ``drifted`` (the
    window's training part), redrawn with replacement (as many rows as both hold) so that they
    follow the drifted distribution. ``none``: both appended as they are.

    The importance weight of a pool row x towards the drifted distribution is p_drifted(x) / p_pool(x),
    which is proportional to P(drifted | x) from a classifier of old vs drifted rows: one formula
    for old and drifted rows alike, so regions only the drifted rows cover (a new intake channel)
    keep their full share, and old regions the drifted rows no longer visit fade out. Weights are
    scaled to mean 1 and clipped at ``max_weight``."""
    combined = Split.concat([old, drifted])
    if method == "none" or len(old) == 0:
        return combined, Weighting(method="none", old_rows=len(old), drifted_rows=len(drifted), drawn_rows=len(combined),
                                   effective_rows=float(len(combined)), drifted_share_drawn=len(drifted) / max(1, len(combined)),
                                   clipped_share=0.0)

    frame = _domain_matrix(combined)
    numeric = [c for c in old.X.columns if old.X[c].dtype.kind in "fi"]
    categorical = [c for c in frame.columns if c not in numeric]
    is_drifted = np.r_[np.zeros(len(old), dtype=int), np.ones(len(drifted), dtype=int)]
    # a drift confined to one group is an interaction (group x feature): trees see it, a linear model does not
    classifier = make_pipeline(make_preprocessor("native", numeric, categorical),
                               HistGradientBoostingClassifier(categorical_features=list(range(len(categorical))),
                                                              max_iter=100, learning_rate=0.1, random_state=seed))
    folds = min(5, int(min(len(old), len(drifted))))
    if folds < 2:
        raise BadInputError(f"density-ratio weights need at least 2 drifted training rows; the window left {len(drifted)}")
    # out-of-fold probabilities: a row's weight never comes from a classifier that saw it. One OpenMP
    # thread: measured 1.7 s for 4,900 rows, 74 s with all threads on a loaded 2-core machine (spin-waits)
    with threadpool_limits(1):
        probability = cross_val_predict(classifier, frame, is_drifted, method="predict_proba",
                                        cv=StratifiedKFold(folds, shuffle=True, random_state=seed))[:, 1]
    weights = probability / probability.mean()
    clipped = weights > max_weight
    weights = np.minimum(weights, max_weight)
    drawn = np.random.default_rng(seed).choice(len(combined), size=len(combined), replace=True, p=weights / weights.sum())
    return combined.take(np.sort(drawn)), Weighting(
        method="density_ratio", old_rows=len(old), drifted_rows=len(drifted), drawn_rows=len(drawn),
        effective_rows=round(float(weights.sum() ** 2 / (weights ** 2).sum()), 1),
        drifted_share_drawn=round(float((drawn >= len(old)).mean()), 4), clipped_share=round(float(clipped.mean()), 4),
        domain_auc=round(float(roc_auc_score(is_drifted, probability)), 4),
    )


class DriftLineage(BaseModel):
    """A rerun's answer to a drift alert, as the registry records it with the promoted model."""

    incident: str | None
    rows: DriftedRows
    weighting: Weighting | None
    clears: Clears


# -- judging a rerun on the held-out drifted rows -------------------------------------------
class AlertSeen(BaseModel):
    """The alert a rerun answers: which metric, on which window, at what value."""

    incident: str | None = None
    window: str
    champion_version: str
    sensitive: str
    metrics: list[Metric]


class DriftedFigure(BaseModel):
    """One gap on the held-out drifted rows, for the champion and the candidate."""

    key: str
    kind: str
    threshold: float
    rows: int
    champion: Metric | None
    candidate: Metric | None


class DriftedJudgement(BaseModel):
    """What the review of a rerun starts with: the alert, both models on the held-out drifted rows, and
    whether approving clears the alert."""

    alert: AlertSeen | None
    held_out_rows: int
    held_out_labelled: int
    accuracy: dict[str, float] = Field({}, description="champion and candidate accuracy on the labelled held-out drifted rows")
    figures: list[DriftedFigure]
    gates: list[GateResult]
    clears: Clears
    why: str


def held_out_rows(spec: DatasetSpec, drifted: DriftedRows) -> Rows:
    return read_window(spec, drifted.held_out_file)


def fairness_gaps(model, rows: Rows, sensitive: str, policy: Policy, seed: int) -> list[Metric]:
    """The monitor's fairness gaps of ``model``'s decisions on ``rows``, with the gates' confidence:
    the prediction-rate gap on every row, equalized odds on the labelled ones (when gated)."""
    confidence = policy.bootstrap.confidence
    predictions = np.asarray(model.predict(rows.X, rows.groups)).astype(int)
    groups = rows.groups[sensitive]
    rates = selection_rates(predictions, groups)
    skipped: list[str] = []
    # the held-out rows are their own reference: only the window-side figures are read here
    metrics = prediction_rate_gap(predictions, groups, rates, rates, policy, sensitive, seed, skipped, confidence)
    known = rows.y.notna().to_numpy() if rows.y is not None else np.zeros(len(rows), dtype=bool)
    if known.any():
        labelled = rows.take(np.flatnonzero(known))
        labelled = replace(labelled, y=labelled.y.astype(int))
        metrics += labelled_metrics(labelled.y.to_numpy(), predictions[known], labelled.groups[sensitive], labelled,
                                    predictions[known], labelled.groups[sensitive], policy, policy.monitoring_settings,
                                    sensitive, seed, skipped, confidence)
    return [m.model_copy(update={"reference": None}) for m in metrics if m.kind in FAIRNESS_KINDS and m.threshold is not None]


def _more_rows_advice(metric: Metric, held: int, labelled: int, windows: int) -> str:
    """How many more held-out rows (and alerting windows like these) would decide an undecided gap, and
    towards which side."""
    side = "pass" if metric.value <= metric.threshold else "fail"
    factor = rows_factor(metric.value, (metric.low, metric.high), metric.threshold)
    base = labelled if metric.kind in LABELLED_KINDS else held
    what = "labelled held-out rows" if metric.kind in LABELLED_KINDS else "held-out rows (labels not needed)"
    if factor is None:
        return (f"{metric.key} {metric.value:.3f} sits on the threshold {metric.threshold}: more rows would not decide it; "
                "it would most likely stay undecided")
    more_windows = math.ceil((factor - 1) * windows)
    return (f"with about {factor:.1f}x the {what} ({base} -> {math.ceil(base * factor)}; about {more_windows} more "
            f"alerting window(s) like these) it would most likely {side} "
            f"(estimate {metric.value:.3f} {'<=' if side == 'pass' else '>'} {metric.threshold})")


def judge_on_drifted(models: dict, rows: Rows, alert: AlertSeen | None, sensitive: str, policy: Policy,
                     settings: RerunSettings, seed: int, windows: int = 1) -> DriftedJudgement:
    """Champion (if any) and candidate on the held-out drifted rows: one gate per fairness gap that the
    monitor gates, verdicts from the whole interval as at the policy's gates; inconclusive ones are
    handled as ``settings.undecided`` says. ``windows``: how many alerting windows the rows come from."""
    judged = {name: model for name, model in models.items() if name in ("champion", "candidate")}
    per_model = {name: {m.key: m for m in fairness_gaps(model, rows, sensitive, policy, seed)} for name, model in judged.items()}
    known = np.flatnonzero(rows.y.notna().to_numpy()) if rows.y is not None else np.array([], dtype=int)
    accuracy = {}
    if len(known):

        labelled_rows = rows.take(known)
        accuracy = {name: round(float(accuracy_score(labelled_rows.y.astype(int), model.predict(labelled_rows.X, labelled_rows.groups))), 4)
                    for name, model in judged.items()}
    keys = list(dict.fromkeys([*per_model.get("candidate", {}), *per_model.get("champion", {})]))
    labelled = int(rows.y.notna().sum()) if rows.y is not None else 0
    figures, gates = [], []
    for key in keys:
        candidate, champion = per_model["candidate"].get(key), per_model.get("champion", {}).get(key)
        some = candidate or champion
        figures.append(DriftedFigure(key=key, kind=some.kind, threshold=some.threshold, rows=some.rows,
                                     champion=champion, candidate=candidate))
        if candidate is None:
            gates.append(GateResult(
                gate=DRIFT_GATE_PREFIX + key, metric=some.kind, value=None, threshold=some.threshold, verdict="inconclusive",
                on_inconclusive=settings.undecided,
                reason=f"{key} on the held-out drifted rows: the candidate's gap has no value (too few rows per group)"))
            continue
        verdict = verdict_of(candidate.value, (candidate.low, candidate.high), candidate.threshold, upper=True)
        shown = f"{candidate.value:.3f} [{candidate.low:.3f}, {candidate.high:.3f}]"
        before = f"; champion {champion.value:.3f} [{champion.low:.3f}, {champion.high:.3f}]" if champion else ""
        gates.append(GateResult(
            gate=DRIFT_GATE_PREFIX + key, metric=candidate.kind, value=candidate.value,
            interval=(candidate.low, candidate.high), threshold=candidate.threshold, verdict=verdict,
            on_inconclusive=settings.undecided,
            reason=(f"{key} on {candidate.rows} held-out drifted rows: candidate {shown}{before}: {verdict} "
                    f"(<= {candidate.threshold})"),
            advice=_more_rows_advice(candidate, len(rows), labelled, windows) if verdict == "inconclusive" else None,
        ))
    cfg = policy.monitoring_settings
    gap_limit = cfg.max_prediction_rate_gap if cfg.max_prediction_rate_gap is not None else \
        policy.thresholds.max_demographic_parity_difference
    if not gates and gap_limit is not None:  # nothing measurable is no evidence either way: the undecided rule applies
        key = f"prediction_rate_gap:{sensitive}"
        gates.append(GateResult(
            gate=DRIFT_GATE_PREFIX + key, metric="prediction_rate_gap", value=None, threshold=gap_limit,
            verdict="inconclusive", on_inconclusive=settings.undecided,
            reason=(f"{key}: not measurable on the {len(rows)} held-out drifted rows (fewer than two groups with "
                    f"{cfg.min_group_rows} rows)")))
    if not gates:
        clears, why = "cannot tell yet", "the policy gates no fairness gap the monitor measures"
    elif any(g.verdict == "fail" for g in gates):
        clears, why = "no", "; ".join(g.reason for g in gates if g.verdict == "fail")
    elif all(g.verdict == "pass" for g in gates):
        clears, why = "yes", "every gap's interval lies below its threshold on the held-out drifted rows"
    else:
        clears, why = "cannot tell yet", "; ".join(g.advice or g.reason for g in gates if g.verdict != "pass")
    return DriftedJudgement(alert=alert, held_out_rows=len(rows), held_out_labelled=labelled, accuracy=accuracy, figures=figures,
                            gates=gates, clears=clears, why=why)

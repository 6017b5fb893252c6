"""Bootstrap confidence intervals for the gated metrics: the one interval method of fairloop.

Resampling is **stratified by sensitive group**: every resample keeps each group's row count
and draws its rows with replacement from that group, so a small group never vanishes from a
resample (no empty group, no NaN selection rate). Labels are *not* held fixed within a group:
a group's base rate varies across resamples as it does between samples of the population, and
that variation is part of the uncertainty of every rate that is not conditioned on the label.
(Holding group x label counts fixed, as this module did before, removes it: the selection
rate of a model that separates the labels well then looks more certain than it is; for a
model that predicts the label exactly, not uncertain at all. Seeded simulation, 2,000 rows, a
rule that tracks the label (``bench/missing_sensitive_bench.py``): nominal-95 % DPD intervals
covered the population DPD in 0.88 of 100 replicates with group x label strata, in 0.941 of
1,500 with group strata; with 40 % of the sensitive values hidden (more often in one group)
and inferred, 0.83 before and 0.93 of 300 replicates now.) A resample that draws
no positive (negative) of a small group has no TPR (FPR) for it; such draws are left out of
that rate's interval, and the group floors (``fairloop.data.groups``) keep groups with few
positives out of the gated rates anyway. The monitor uses the same function for the same
statistics.

Fairlearn's ``MetricFrame(n_boot=..., ci_quantiles=...)`` computes percentile intervals too, but
unstratified and by re-running its whole disaggregation per resample (measured here: 90 s for
200 resamples of the 16k-row Adult test set). Gates need intervals on every run and every
sweep candidate, so this module draws the resamples once as an index matrix and computes every
group's confusion counts with ``np.bincount``: the same statistics (tested against Fairlearn's
metric functions), well under a second. The same resamples serve every model (a paired
bootstrap), so a drop against the baseline or champion gets its own interval rather than a
difference of two independent ones. AUC and net benefit, which need scores rather than
decisions, are computed per resample the same way (no per-resample sort or loop).

**Simultaneous intervals (intersections).** A gate on the cells of an intersection
(``sex:race``, see ``fairloop.data.groups``) judges a worst case over many comparisons: the DPD of
ten cells is the largest of 45 pairwise gaps, and the pair that looks worst is the one noise
favoured most (the max of noisy gaps sits above the true max; the percentile interval of a max
is not reliable near ties). With ``simultaneous=True`` the gated group metrics therefore come
from intervals that hold *together*, controlling the **family-wise error rate** (FWER): with
probability >= ``confidence`` every interval of the family covers its true value. For that
event, DPD (EOD) lies within [max over pairs of the smallest |gap| the pair's interval allows,
max over pairs of its largest]; the DI ratio within [min lower / max upper, min upper / max
lower] of the cells' selection rates; min group TPR within [min lower, min upper] of the
cells' TPRs; so each gate keeps its stated level however many cells there are. The family is
max-|t|: on the same stratified resamples, q is the ``confidence`` quantile over resamples of
max_j |draw_j - estimate_j| / se_j(draw), and the interval is estimate_j +- q se_j(estimate),
with se the standard error of a rate on its cell's rows (half-count smoothed; for a pairwise
gap the root sum of squares of its two cells'): a bootstrap-t max-T (Westfall & Young; Romano
& Wolf). Studentizing each draw by its own standard error corrects for the skew of rates in
small cells (seeded simulation, 8 cells of 40-400 rows: 0.92 of replicates covered all cells
with one bootstrap standard deviation per cell; 0.950 of 1,000 with the bootstrap-t, 0.946 with
cells of 200-2,000 rows, where per-cell 95 % percentile intervals cover all cells in 0.63-0.66;
``bench/intersectional_bench.py``). It is sharper
than Bonferroni because it uses the correlation between comparisons (every pair with the same
cell moves together). FWER and not the false-discovery rate: a gate's verdict is one claim about
*all* cells at once ("every gap is within the limit", or "some gap exceeds it"), which is a
family-wise statement; Benjamini-Hochberg bounds the share of false flags among flagged cells,
right for screening cells, not for a pass/fail on the worst. The families: pairwise differences
of selection rates (DPD), of TPRs and FPRs together (EOD), per-cell selection rates (DI ratio and
the per-cell intervals the reviewer sees), per-cell TPRs (min TPR), per-cell FPRs (shown).
**More than two groups of one column** take the same family-wise intervals (``simultaneous=None``,
the default, decides by the number of counted groups: :func:`family_wise`). A gap over more than
two groups is a max over pairs too, and its percentile interval is biased the same way: small
groups' noise lifts every resample's max, so the interval sits above the estimate. Seeded
simulation, 5 groups of 9,000 / 1,500 / 500 / 150 / 130 rows, 300 replicates: percentile
intervals covered a true DPD of 0.01 / 0.04 / 0.06 in 0.00 / 0.65 / 0.71 of them (0.01: the
interval excluded its own estimate in 4 %), and a gate at 0.05 failed the model whose true DPD
is 0.04 in 14.7 % of them; the family-wise intervals covered 0.98 / 0.99 / 0.98 and failed it in
1.0 %. Two groups keep the percentile intervals (one pair: the gap is the difference itself), and
so do rows with inferred memberships (not supported there).

Rows with no sensitive value and inferred memberships (``fairloop.data.membership``): they form
their own stratum (group ``'missing'``), and on every resample the inference model is
refitted on the resample's known rows, so a drawn missing row counts towards each group with
that resample's probability. The intervals then hold the uncertainty of the inference as well
as that of the rows.
"""

from __future__ import annotations

import numpy as np

from fairloop.data.groups import CountedGroups, GroupFloors, count_groups
from fairloop.data.membership import InferredMembership
from fairloop.gates.metrics import GROUP_METRICS, between_groups

CALIBRATION_GAP = "calibration_gap"  # a group's mean probability of a positive decision minus its observed positive rate


def family_wise(counted_groups: int) -> bool:
    """Whether group metrics over this many counted groups take simultaneous (family-wise)
    intervals: more than two groups, where a gap is a max over several pairs (module docstring)."""
    return counted_groups > 2


def stratified_resamples(strata: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` index vectors over ``len(strata)`` rows; column ``j`` of every resample is a
    row drawn with replacement from row ``j``'s stratum, so every stratum keeps its size."""
    _, codes = np.unique(np.asarray(strata), return_inverse=True)
    rng = np.random.default_rng(seed)
    samples = np.empty((n_boot, len(codes)), dtype=np.int64)
    for code in range(codes.max() + 1 if len(codes) else 0):
        members = np.flatnonzero(codes == code)
        samples[:, members] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    return samples


def _group_rates(ys: np.ndarray, ps: np.ndarray, gs: np.ndarray, n_groups: int,
                 soft: tuple[np.ndarray, np.ndarray] | None = None,
                 probabilities: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Selection rate, TPR and FPR of every group (columns) on every resample (rows): labels
    ``ys``, decisions ``ps`` and group codes ``gs`` drawn by the resamples; with the drawn
    ``probabilities`` of a positive decision, also each group's calibration gap (mean
    probability minus observed positive rate).

    ``soft``: (columns of the resamples that draw rows with no sensitive value, their group
    probabilities per resample, shape resamples x columns x groups); those rows add their
    probabilities to each group's sums instead of a 1 to one group's."""
    n_boot = ys.shape[0]
    offsets = (np.arange(n_boot)[:, None] * n_groups + gs).ravel()
    known = None
    if soft is not None:  # the missing rows' columns add nothing through their (placeholder) group code
        known = np.ones(ys.shape[1])
        known[soft[0]] = 0.0

    def per_group(weights: np.ndarray) -> np.ndarray:
        hard = weights if known is None else weights * known
        sums = np.bincount(offsets, weights=hard.ravel(), minlength=n_boot * n_groups).reshape(n_boot, n_groups)
        if soft is not None:
            sums += np.einsum("bj,bjk->bk", weights[:, soft[0]], soft[1])
        return sums

    with np.errstate(invalid="ignore", divide="ignore"):
        rows = per_group(np.ones_like(ys, dtype=float))
        rates = {
            "selection_rate": per_group(ps.astype(float)) / rows,
            "true_positive_rate": per_group((ps & ys).astype(float)) / per_group(ys.astype(float)),
            "false_positive_rate": per_group((ps & (1 - ys)).astype(float)) / per_group((1 - ys).astype(float)),
        }
        if probabilities is not None:
            rates[CALIBRATION_GAP] = (per_group(probabilities) - per_group(ys.astype(float))) / rows
    return rates


def _resample_metrics(y: np.ndarray, pred: np.ndarray, samples: np.ndarray, groups: CountedGroups,
                      rates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Decision metrics of one model on every resample (rows of ``samples`` are index vectors),
    from its group ``rates`` on them (:func:`_group_rates`)."""
    ys, ps = y[samples], pred[samples]
    selection, tpr, fpr = rates["selection_rate"], rates["true_positive_rate"], rates["false_positive_rate"]
    with np.errstate(invalid="ignore", divide="ignore"):
        positives, negatives = ys.sum(axis=1), (1 - ys).sum(axis=1)
        balanced = ((ps & ys).sum(axis=1) / positives + ((1 - ps) & (1 - ys)).sum(axis=1) / negatives) / 2
    accuracy = (ps == ys).mean(axis=1)
    counted = groups.counted
    selected = selection[:, counted["selection_rate"]]
    return {
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "accuracy_lift_over_majority": accuracy - np.maximum(positives, negatives) / ys.shape[1],
        "balanced_accuracy_lift_over_majority": balanced - 0.5,  # the majority-class predictor scores 0.5
        **{metric.name: between_groups(metric, rates, counted) for metric in GROUP_METRICS},
        # per-group rates (for the reviewer's "what changes for whom"), counted groups only
        **{f"selection_rate[{name}]": selected[:, i] for i, name in enumerate(groups.names_for("selection_rate"))},
        **{f"true_positive_rate[{name}]": tpr[:, counted["true_positive_rate"]][:, i]
           for i, name in enumerate(groups.names_for("true_positive_rate"))},
        **{f"false_positive_rate[{name}]": fpr[:, counted["false_positive_rate"]][:, i]
           for i, name in enumerate(groups.names_for("false_positive_rate"))},
        # shown, never gated: each of its own (percentile) interval, not a simultaneous family
        **({f"{CALIBRATION_GAP}[{name}]": rates[CALIBRATION_GAP][:, counted["selection_rate"]][:, i]
            for i, name in enumerate(groups.names_for("selection_rate"))} if CALIBRATION_GAP in rates else {}),
    }


def _resample_auc(y: np.ndarray, scores: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """ROC AUC of every resample (ties count half, as in scikit-learn's roc_auc_score).

    Scores are replaced by their rank among the distinct values once; per resample, the
    counts of positives and negatives at each level (``np.bincount``) give, for every
    positive, how many negatives score below it: O(resamples x rows), no per-resample sort.
    """
    n_boot = samples.shape[0]
    levels, level_of = np.unique(scores, return_inverse=True)
    offsets = (np.arange(n_boot)[:, None] * len(levels) + level_of[samples]).ravel()
    ys = y[samples].ravel().astype(float)
    shape = (n_boot, len(levels))
    positives = np.bincount(offsets, weights=ys, minlength=n_boot * len(levels)).reshape(shape)
    negatives = np.bincount(offsets, weights=1 - ys, minlength=n_boot * len(levels)).reshape(shape)
    below = np.cumsum(negatives, axis=1) - negatives
    with np.errstate(invalid="ignore", divide="ignore"):
        return (positives * (below + 0.5 * negatives)).sum(axis=1) / (positives.sum(axis=1) * negatives.sum(axis=1))


def net_benefit_min(y: np.ndarray, scores: np.ndarray, samples: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """The lowest decision-curve net benefit (true positives minus false positives weighted by
    the threshold's odds, per row) over 11 thresholds across ``band``, for every row of
    ``samples`` (index vectors; ``np.arange(n)[None, :]`` is the sample itself)."""
    ys = y[samples].astype(bool)
    n = samples.shape[1]
    worst = np.full(samples.shape[0], np.inf)
    for threshold in np.linspace(*band, 11):
        act = (scores >= threshold)[samples]
        benefit = (act & ys).sum(axis=1) / n - (act & ~ys).sum(axis=1) / n * threshold / (1 - threshold)
        worst = np.minimum(worst, benefit)
    return worst


def rate_standard_error(rate: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Standard error of a rate measured on ``rows`` rows, with half a row added to the count
    and one to the rows (so it stays positive at a rate of 0 or 1, where the bootstrap has no spread)."""
    smoothed = (rate * rows + 0.5) / (rows + 1)
    return np.sqrt(smoothed * (1 - smoothed) / rows)


def max_t_intervals(draws: np.ndarray, estimate: np.ndarray, draw_se: np.ndarray, estimate_se: np.ndarray,
                    confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous intervals ``estimate_j +- q * estimate_se_j`` for the columns of ``draws``
    (resamples x statistics): ``q`` the ``confidence`` quantile over resamples of
    ``max_j |draw_j - estimate_j| / draw_se_j``, each draw studentized by its own standard error."""
    estimate = np.asarray(estimate, dtype=float)
    if draws.shape[1] == 0 or draws.shape[0] < 2:
        return estimate.copy(), estimate.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        studentized = np.abs(draws - estimate) / draw_se
    worst = np.max(np.where(np.isnan(studentized), -np.inf, studentized), axis=1)
    worst = worst[np.isfinite(worst)]
    q = float(np.quantile(worst, confidence)) if worst.size else 0.0
    return estimate - q * estimate_se, estimate + q * estimate_se


def _gap_interval(estimates: list[np.ndarray], draws: list[np.ndarray], rows: list[np.ndarray],
                  confidence: float) -> tuple[float, float]:
    """Interval of the largest |pairwise difference| within each rate (one family over all rates
    given): [max of each pair's smallest possible |gap|, max of its largest]."""
    if not estimates or any(len(e) < 2 for e in estimates):
        return (float("nan"), float("nan"))
    estimate, drawn, estimate_se, draw_se = [], [], [], []
    for e, d, n in zip(estimates, draws, rows):
        i, j = np.triu_indices(len(e), 1)
        estimate.append(e[i] - e[j])
        drawn.append(d[:, i] - d[:, j])
        se, se_drawn = rate_standard_error(e, n), rate_standard_error(d, n)
        estimate_se.append(np.hypot(se[i], se[j]))  # the cells are resampled independently
        draw_se.append(np.hypot(se_drawn[:, i], se_drawn[:, j]))
    low, high = max_t_intervals(np.concatenate(drawn, axis=1), np.concatenate(estimate), np.concatenate(draw_se, axis=1),
                                np.concatenate(estimate_se), confidence)
    smallest = np.where(low > 0, low, np.where(high < 0, -high, 0.0))
    return (float(smallest.max()), float(min(1.0, np.maximum(np.abs(low), np.abs(high)).max())))


def _simultaneous_group_intervals(estimates: dict[str, np.ndarray], draws: dict[str, np.ndarray],
                                  groups: CountedGroups, confidence: float) -> dict[str, tuple[float, float]]:
    """The gated group metrics' and the per-group rates' intervals from max-|t| families (see the
    module docstring); ``estimates`` and ``draws``: group rates on the sample and per resample."""
    result: dict[str, tuple[float, float]] = {}
    counted = {rate: (estimates[rate][mask], draws[rate][:, mask], groups.sizes[rate][mask])
               for rate, mask in groups.counted.items()}
    bounds = {}
    for rate, (estimate, drawn, rows) in counted.items():
        low, high = max_t_intervals(drawn, estimate, rate_standard_error(drawn, rows), rate_standard_error(estimate, rows),
                                    confidence)
        bounds[rate] = (np.clip(low, 0, 1), np.clip(high, 0, 1))
        for name, lo, hi in zip(groups.names_for(rate), *bounds[rate]):
            result[f"{rate}[{name}]"] = (float(lo), float(hi))
    for metric in GROUP_METRICS:
        if metric.shape == "gap":
            result[metric.name] = _gap_interval(*([counted[r][k] for r in metric.rates] for k in range(3)), confidence)
            continue
        low, high = bounds[metric.rates[0]]
        if metric.shape == "ratio":
            result[metric.name] = (
                (float(low.min() / high.max()), float(min(1.0, high.min() / low.max())) if low.max() > 0 else 1.0)
                if len(low) >= 2 and high.max() > 0 else (float("nan"), float("nan")))
        else:
            result[metric.name] = (float(low.min()), float(high.min())) if len(low) else (float("nan"), float("nan"))
    return result


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` share of ``values`` (NaN draws left out; all NaN: (nan, nan))."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    tail = (1 - confidence) / 2
    return (float(np.quantile(finite, tail)), float(np.quantile(finite, 1 - tail)))


def bootstrap_intervals(
    y_true: np.ndarray,
    predictions: dict[str, np.ndarray],
    groups: np.ndarray,
    *,
    n_boot: int,
    confidence: float,
    seed: int,
    floors: GroupFloors | None = None,
    drops_against: tuple[str, ...] = (),
    challengers: tuple[str, ...] = ("candidate",),
    scores: dict[str, np.ndarray] | None = None,
    decision_probabilities: dict[str, np.ndarray] | None = None,
    net_benefit_band: tuple[float, float] | None = None,
    simultaneous: bool | None = None,
    membership: InferredMembership | None = None,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Percentile intervals per model and metric, on resamples stratified by sensitive group.

    ``simultaneous``: the group metrics and per-group rates get max-|t| simultaneous intervals
    instead (family-wise; for the cells of an intersection, see the module docstring); None:
    when more than two groups are counted (:func:`family_wise`) and no membership is inferred.

    Group metrics count the groups that meet ``floors`` on the whole sample (default: every
    group); ``accuracy_drop_vs_<ref>`` (and ``auc_drop_vs_<ref>``) for each challenger against
    each model in ``drops_against``. ``scores`` (the underlying scorer's positive-class
    probability, by model) give ``auc``; ``decision_probabilities`` (the probability that the
    deployed, possibly randomised, decision is positive) give ``decision_auc``, each counted
    group's ``calibration_gap[<group>]`` and, with a ``net_benefit_band``, ``net_benefit_min``. ``membership``: inferred groups of the rows
    with no sensitive value, refitted on every resample.
    """
    y = np.asarray(y_true).astype(int)
    group_names = np.asarray(groups).astype(str)
    floors = floors or GroupFloors(rows=1, positives=1, negatives=1)
    samples = stratified_resamples(group_names, n_boot, seed)
    if simultaneous and membership is not None:  # cells of an intersection never hold the 'missing' group
        raise ValueError("simultaneous intervals over inferred memberships are not supported")
    soft = None
    if membership is None:
        counted = count_groups(group_names, y, floors)
    else:
        expanded_groups, weights, (expanded_y,) = membership.expanded(group_names, y)
        counted = count_groups(expanded_groups, expanded_y, floors, weights)
        soft = (np.flatnonzero(membership.missing), membership.resampled(samples))
    if simultaneous is None:
        simultaneous = membership is None and family_wise(int(counted.counted["selection_rate"].sum()))
    group_codes = np.minimum(np.searchsorted(counted.names, group_names), len(counted.names) - 1)
    predictions = {name: np.asarray(pred).astype(int) for name, pred in predictions.items()}
    probabilities = {name: np.asarray(p, dtype=float) for name, p in (decision_probabilities or {}).items()}
    rates = {name: _group_rates(y[samples], pred[samples], group_codes[samples], len(counted.names), soft,
                                probabilities[name][samples] if name in probabilities else None)
             for name, pred in predictions.items()}
    per_model = {name: _resample_metrics(y, pred, samples, counted, rates[name]) for name, pred in predictions.items()}
    for name, model_scores in (scores or {}).items():
        per_model[name]["auc"] = _resample_auc(y, np.asarray(model_scores, dtype=float), samples)
    for name, model_probabilities in probabilities.items():
        per_model[name]["decision_auc"] = _resample_auc(y, model_probabilities, samples)
        if net_benefit_band is not None:
            per_model[name]["net_benefit_min"] = net_benefit_min(y, model_probabilities, samples, net_benefit_band)
    result = {name: {metric: percentile_interval(values, confidence) for metric, values in metrics.items()}
              for name, metrics in per_model.items()}
    if simultaneous:
        sample = np.arange(len(y))[None, :]
        for name, pred in predictions.items():
            estimates = {rate: row[0] for rate, row in
                         _group_rates(y[sample], pred[sample], group_codes[sample], len(counted.names)).items()}
            result[name] |= _simultaneous_group_intervals(estimates, rates[name], counted, confidence)
    for challenger in challengers:
        for reference in drops_against:
            if reference not in per_model or challenger not in per_model:
                continue
            for metric in ("accuracy", "auc"):
                if metric in per_model[reference] and metric in per_model[challenger]:
                    drop = per_model[reference][metric] - per_model[challenger][metric]
                    result[challenger][f"{metric}_drop_vs_{reference}"] = percentile_interval(drop, confidence)
    return result

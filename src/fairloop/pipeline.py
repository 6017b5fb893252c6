"""The remediation stages as plain functions, shared by every driver.

The Prefect flow calls them as tasks in memory, ``dvc repro`` calls them through
``fairloop stage NAME`` with files in between, and ``fairloop reproduce`` calls them on a
registry entry's recorded inputs: one implementation, so all three reach the same metrics.
"""

from __future__ import annotations

import shutil
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from fairloop.audit.checks import run_audit
from fairloop.audit.record import AuditReport
from fairloop.data.dataset_spec import DatasetSpec
from fairloop.data.datasets import LoadedDataset, load_dataset, read_extra_training_rows
from fairloop.data.groups import is_intersection
from fairloop.data.membership import (
    InferredMembership,
    MembershipReport,
    infer_membership,
)
from fairloop.data.parsing import MISSING_GROUP
from fairloop.data.rows import Split
from fairloop.data.splits import Splits, make_splits
from fairloop.errors import BadInputError
from fairloop.gates.evaluate import (
    Evaluation,
    decision_shifts,
    predict,
    score_predictions,
)
from fairloop.gates.intervals import bootstrap_intervals
from fairloop.gates.policy import Policy, load_policy
from fairloop.monitor.drifted import towards_drifted
from fairloop.remedy.constraints import (
    ConstraintTemplate,
    check_weighting,
    fit_candidate,
    load_constraint_template,
)
from fairloop.remedy.crossfit import ModeDecision, choose_mode, fit_rows
from fairloop.remedy.fit_progress import FitCounter, OnFitted, expected_fit_cost
from fairloop.remedy.frozen import FrozenModel, FrozenScorer, load_base_model
from fairloop.remedy.model import FairModel, Predictions
from fairloop.remedy.post_processing import fit_on_frozen
from fairloop.remedy.recipes import (
    NO_RECIPE,
    AugmentReport,
    Recipe,
    apply_recipe,
    load_recipe,
)


@dataclass(frozen=True)
class RunParams:
    """What a run is asked to do: the data files it uses and its knobs (DVC's params.yaml)."""

    dataset: str
    recipe: str = "recipes/none.yaml"
    constraint: str = "constraints/gs-dp.yaml"
    policy: str = "policies/default.yaml"
    sensitive: str | None = None
    train_rows: int | None = None
    seed: int = 0
    extra_training_data: str | None = None  # raw-format CSV appended to the training pool (e.g. a drifted window)
    extra_weighting: Literal["density_ratio", "none"] = "none"  # how the pool is redrawn towards those rows (fairloop.monitor.drifted)
    extra_max_weight: float = 20.0
    base_model: str | None = None  # a fitted model to post-process, never retrain: a file or module:function
    base_model_sha256: str | None = None  # the registry's record of that file: loads it without --trust

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Inputs:
    params: RunParams
    loaded: LoadedDataset
    recipe: Recipe
    template: ConstraintTemplate
    policy: Policy
    base_model: FrozenScorer | None = None

    @property
    def sensitive(self) -> str:
        return self.params.sensitive or self.loaded.spec.primary_sensitive


def load_inputs(params: RunParams, trust_base_model: bool = False) -> Inputs:
    """Validate every data file (cheap ones first), then read the dataset (and load the base model,
    if any: ``trust_base_model`` allows a pickle file the registry has no record of)."""
    recipe = load_recipe(params.recipe)
    template = load_constraint_template(params.constraint)
    if recipe.produces_weights:
        check_weighting(template, params.constraint)
    policy = load_policy(params.policy)
    loaded = load_dataset(params.dataset)
    if params.sensitive:
        loaded.spec.grouping(params.sensitive)
    base_model = None
    if params.base_model:
        base_model = load_base_model(params.base_model, loaded.spec.features.columns, trust=trust_base_model,
                                     expected_sha256=params.base_model_sha256)
    return Inputs(params=params, loaded=loaded, recipe=recipe, template=template, policy=policy, base_model=base_model)


def frozen_base(inputs: Inputs, audit: AuditReport) -> FrozenModel | None:
    """The run's base model with what its guardrail varies (the audit's flagged proxies), if any."""
    if inputs.base_model is None:
        return None
    grouping = inputs.loaded.spec.grouping(inputs.sensitive)
    if len(grouping) > 1:
        raise BadInputError(f"the counterfactual guardrail varies one sensitive column; '{inputs.sensitive}' is an "
                            "intersection (remediate a frozen model on one of its features)", field="sensitive")
    proxies = [p.feature for p in audit.proxies if p.sensitive == inputs.sensitive and p.flagged]
    return FrozenModel.of(inputs.base_model, grouping[0].column, proxies)


def fit_model(rows: Split, template: ConstraintTemplate, sensitive: str, seed: int, recipe: Recipe = NO_RECIPE,
              frozen: FrozenModel | None = None) -> tuple[FairModel, float]:
    """Fit a candidate: retrained (:func:`fit_candidate`), or post-processing a ``frozen`` model."""
    if frozen is None:
        return fit_candidate(rows, template, sensitive, seed, recipe=recipe)
    return fit_on_frozen(frozen, rows, template, sensitive, seed, recipe)


def prepare(inputs: Inputs) -> Splits:
    """The spec's splits; extra training rows (a drifted window's) join the training split only, never
    validation or test, so held-out figures stay comparable and uncontaminated."""
    params = inputs.params
    splits = make_splits(inputs.loaded, sensitive=inputs.sensitive, train_rows=params.train_rows, seed=params.seed)
    if params.extra_training_data is None:
        return splits
    extra = read_extra_training_rows(inputs.loaded.spec, params.extra_training_data)
    train, weighting = towards_drifted(splits.train, extra, params.extra_weighting, seed=params.seed,
                                       max_weight=params.extra_max_weight)
    return replace(splits, train=train, weighting=weighting)


def decide_mode(inputs: Inputs, splits: Splits) -> ModeDecision:
    """The policy's evaluation mode on these splits (``auto`` decides by group sizes)."""
    policy = inputs.policy
    return choose_mode(policy.evaluation, splits, inputs.sensitive, policy.group_floors, policy.crossfit.folds,
                       policy.crossfit.auto_below_group_rows)


def audit(inputs: Inputs, splits: Splits) -> AuditReport:
    return run_audit(inputs.loaded.spec, splits.train, inputs.sensitive, membership=inputs.policy.missing_sensitive)


def augment(inputs: Inputs, splits: Splits, mode: ModeDecision) -> tuple[Split, AugmentReport]:
    """The rows the promoted model is fitted on, after the recipe (what the registry stores)."""
    return apply_recipe(fit_rows(splits, mode), inputs.recipe, inputs.sensitive, inputs.params.seed)


def baseline_template(template: ConstraintTemplate) -> ConstraintTemplate:
    """The unconstrained model every run reports: same learner, real data, no mitigation."""
    return template.model_copy(update={"method": "none", "constraint": None, "bound": None})


def train(inputs: Inputs, splits: Splits, mode: ModeDecision, frozen: FrozenModel | None = None,
          on_fitted: OnFitted | None = None) -> dict[str, tuple[FairModel, float]]:
    """Fit the baseline and the candidate (recipe and template) one after the other on the mode's
    fit rows (each learner already uses every core); with a ``frozen`` model, the baseline is it.
    ``on_fitted`` counts the two fits (a run's progress)."""
    seed, sensitive, rows = inputs.params.seed, inputs.sensitive, fit_rows(splits, mode)
    models = (("baseline", baseline_template(inputs.template), NO_RECIPE), ("candidate", inputs.template, inputs.recipe))
    counter = FitCounter([expected_fit_cost(template.method) for _, template, _ in models], on_fitted)
    counter.start()
    fitted = {}
    for position, (name, template, recipe) in enumerate(models):
        try:
            fitted[name] = fit_model(rows, template, sensitive, seed, recipe=recipe, frozen=frozen)
        except (ValueError, ArithmeticError) as exc:  # e.g. Fairlearn on a group with a single label
            raise BadInputError(f"the {name} ({template.label()}, recipe '{recipe.name}') cannot be fitted on these "
                                f"{len(rows)} rows: {exc}", source=inputs.params.dataset) from None
        counter.finished(position)
    return fitted


def predict_all(models: dict[str, FairModel], split: Split) -> dict[str, Predictions]:
    """Every model's predictions on ``split`` (scored as often as needed, predicted once)."""
    return {name: predict(model, split) for name, model in models.items()}


def evaluate_models(
    models: dict[str, FairModel], split: Split, sensitive: str, policy: Policy | None = None
) -> dict[str, Evaluation]:
    """Held-out metrics of every model (:func:`evaluate_predictions` of their predictions)."""
    return evaluate_predictions(predict_all(models, split), split, sensitive, policy)


def evaluate_predictions(
    predictions: dict[str, Predictions], split: Split, sensitive: str, policy: Policy | None = None
) -> dict[str, Evaluation]:
    """Held-out metrics of every model's ``predictions`` on ``split``. With a ``policy``: its group
    floors and net-benefit band, and paired bootstrap intervals on the same resamples (plus the
    candidate's drops against 'baseline' and 'champion'). The candidate's carries whose decisions
    it changes against each of those (``Evaluation.shifts``)."""
    evaluations = score_all(predictions, split, sensitive, policy)
    if "candidate" in predictions:
        shifts = {name: decision_shifts(split, sensitive, predictions[name], predictions["candidate"])
                  for name in ("baseline", "champion") if name in predictions}
        evaluations["candidate"] = evaluations["candidate"].model_copy(update={"shifts": shifts})
    if policy is None:
        return evaluations
    return with_intervals(evaluations, predictions, split, sensitive, policy, challengers=("candidate",))


def evaluate_declared_intersections(
    predictions: dict[str, Predictions], split: Split, spec: DatasetSpec, sensitive: str, policy: Policy,
) -> dict[str, dict[str, Evaluation]]:
    """The baseline's and the candidate's ``predictions`` on ``split`` judged on the cells of every
    intersection ``spec`` declares that the run does not gate on (as :func:`evaluate_predictions`,
    with simultaneous intervals): what a run gating on one feature does to the cells, for the reviewer."""
    shown = {name: predictions[name] for name in ("baseline", "candidate") if name in predictions}
    return {name: evaluate_predictions(shown, split, name, policy) for name in spec.intersection_names if name != sensitive}


def score_all(predictions: dict[str, Predictions], split: Split, sensitive: str, policy: Policy | None) -> dict[str, Evaluation]:
    """Point metrics of every model's predictions, with the policy's group floors and net-benefit band
    (and its handling of rows with no sensitive value: ``missing_rows``)."""
    options = {} if policy is None else {"floors": policy.group_floors, "net_benefit_band": policy.net_benefit_band}
    report, membership, known = missing_rows(split, sensitive, policy)
    if known is not None:
        split, predictions = split.take(known), {name: p.take(known) for name, p in predictions.items()}
    scored = {name: score_predictions(split, sensitive, pair, **options, membership=membership) for name, pair in predictions.items()}
    return scored if report is None else {name: ev.model_copy(update={"missing_sensitive": report}) for name, ev in scored.items()}


_inferred: dict[tuple, tuple] = {}  # (id of the split, sensitive, settings) -> missing_rows' answer, while the split lives


def missing_rows(split: Split, sensitive: str, policy: Policy | None) -> tuple[MembershipReport | None, InferredMembership | None, np.ndarray | None]:
    """What the policy's ``missing_sensitive`` makes of ``split``'s rows with no ``sensitive`` value:
    (report, inferred memberships, positions of the known rows when only those are judged).

    (None, None, None) when the policy does not ask or every row has a value. The inference
    depends only on the rows and the settings, so a sweep that scores many candidates on the
    same rows fits it once (cached while the split object lives)."""
    settings = None if policy is None else policy.missing_sensitive
    if settings is None:
        return None, None, None
    key = (id(split), sensitive, settings, policy.bootstrap.seed)
    if key not in _inferred:
        missing = (split.groups[sensitive].astype(str) == MISSING_GROUP).to_numpy()
        if not missing.any():
            answer = (None, None, None)
        else:
            report, membership = infer_membership(split.X, split.groups[sensitive], split.y, settings, policy.bootstrap.seed)
            answer = (report, membership, None if membership is not None else np.flatnonzero(~missing))
        _inferred[key] = answer
        weakref.finalize(split, _inferred.pop, key, None)
    return _inferred[key]


def with_intervals(
    evaluations: dict[str, Evaluation], predictions: dict[str, Predictions], split: Split,
    sensitive: str, policy: Policy, challengers: tuple[str, ...],
) -> dict[str, Evaluation]:
    """``evaluations`` with the policy's paired bootstrap intervals, every model on the same
    (group-stratified) resamples; AUC always, net benefit when the policy gates it;
    simultaneous (family-wise) group intervals when ``sensitive`` is an intersection."""
    gates_net_benefit = policy.thresholds.min_net_benefit is not None
    _, membership, known = missing_rows(split, sensitive, policy)
    if known is not None:
        split, predictions = split.take(known), {name: p.take(known) for name, p in predictions.items()}
    intervals = bootstrap_intervals(
        split.y.to_numpy(), {name: p.decisions for name, p in predictions.items()},
        split.groups[sensitive].astype(str).to_numpy(),
        n_boot=policy.bootstrap.n_boot, confidence=policy.bootstrap.confidence, seed=policy.bootstrap.seed,
        floors=policy.group_floors, drops_against=("baseline", "champion"), challengers=challengers,
        scores={name: p.scores for name, p in predictions.items()},
        decision_probabilities={name: p.probabilities for name, p in predictions.items()},
        net_benefit_band=policy.net_benefit_band if gates_net_benefit else None, membership=membership,
        # family-wise intervals for the cells of an intersection, and for more than two groups
        simultaneous=True if is_intersection(sensitive) else None,
    )
    return {name: ev.model_copy(update={"intervals": intervals[name]}) for name, ev in evaluations.items()}


def snapshot_inputs(inputs: Inputs, destination: Path) -> dict[str, str]:
    """Copy every input of a run into ``destination`` so it can be re-run from there alone.

    The recipe, template and policy are copied verbatim; the raw data files go to ``data/``
    and the dataset spec copy points at them (only its file paths differ from the original).
    Returns each file role's path inside ``destination``.
    """

    destination.mkdir(parents=True, exist_ok=True)
    for name, source in (("recipe", inputs.params.recipe), ("constraint", inputs.params.constraint), ("policy", inputs.params.policy)):
        shutil.copyfile(source, destination / f"{name}.yaml")
    (destination / "data").mkdir(exist_ok=True)
    spec = yaml.safe_load(Path(inputs.params.dataset).read_text(encoding="utf-8"))
    copies = {}
    for entry, (role, path) in zip(spec["files"], inputs.loaded.file_paths.items(), strict=True):
        copies[role] = entry["path"] = f"data/{role}-{path.name}"
        shutil.copyfile(path, destination / copies[role])
    if inputs.params.extra_training_data:  # a drifted window the run trained on: kept for reproduce
        copies["extra"] = f"data/extra-{Path(inputs.params.extra_training_data).name}"
        shutil.copyfile(inputs.params.extra_training_data, destination / copies["extra"])
    if inputs.base_model is not None and inputs.base_model.source.sha256:  # a model file (an import path has none)
        copies["base_model"] = f"data/base-model-{Path(inputs.params.base_model).name}"
        shutil.copyfile(inputs.params.base_model, destination / copies["base_model"])
    (destination / "dataset.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return copies

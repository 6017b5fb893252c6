"""The sweep spec (``constraints/sweeps/*.yaml``): its models, loading it, enumerating its grid of
candidates, and writing the chosen candidate's template."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field

from fairloop.data.spec import SpecModel, VersionedSpec, check_allowed_path, load_spec
from fairloop.errors import BadInputError
from fairloop.pipeline import baseline_template
from fairloop.remedy.constraints import (
    ConstraintTemplate,
    load_constraint_template,
)
from fairloop.remedy.recipes import (
    NO_RECIPE,
    Recipe,
    load_recipe,
)


class SweptTemplate(SpecModel):
    template: str = Field(description="constraint template file")
    # an empty list would silently mean "its own bound" (issue 29: a sweep with `bounds: []` ran
    # past 300 s): leave the field out for that
    bounds: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        None, min_length=1, description="the template once per bound (overriding its own); leave out for its own bound"
    )
    recipes: list[str] | None = Field(
        None, description="only with these of the sweep's recipes (default: all); keeps costly reductions off some"
    )


class SearchBudget(SpecModel):
    """What the search after the grid may spend (``run_sweep``): it stops at whichever limit comes first."""

    max_extra_fits: int = Field(ge=1, description="model fits beyond the grid (a crossfit candidate costs K + 1)")
    max_seconds: float = Field(gt=0, description="wall-clock seconds of the search; no step starts that would "
                                                 "end past it, judged by the last step's time")


class SweepSpec(VersionedSpec):
    """A sweep file. Paths are relative to the directory fairloop runs in (the project root),
    like the ``--recipe`` / ``--constraint`` options."""

    recipes: list[str] = Field(min_length=1, description="recipe files")
    constraints: list[str | SweptTemplate] = Field(
        min_length=1, description="template files, or {template: FILE, bounds: [...]} to sweep its bound"
    )
    baseline: str = Field("constraints/unconstrained.yaml", description="template whose learner, unconstrained, is the baseline")
    workers: int | None = Field(None, ge=1, description="processes fitting candidates; default: one per core")
    candidate_timeout_seconds: float | None = Field(
        None, gt=0, description="time budget of each candidate fit (each of a crossfit candidate's K + 1 fits): a fit "
                                "past it is stopped and the candidate listed as timed out; default: none")
    reduction_rows: int | None = Field(
        None, ge=100, description="large data: reductions (each refits its learner dozens of times) are fitted on a "
                                  "group x label stratified subsample of at most this many fit rows; every other "
                                  "candidate, and all selection and test figures, use every row; default: all rows")
    # left out of the content (and its hash) when absent: it changes nothing then
    search: SearchBudget | None = Field(
        None, exclude_if=lambda value: value is None,
        description="when no candidate the policy can choose passes, bisect the bounds of the choosable candidates "
                    "that have one (most accurate first) within this budget; absent: no search")

    def useful_workers(self) -> int:
        """Processes worth starting for this sweep: ``workers`` (default: one per core), at most one
        per model it fits on all rows (each candidate and the baseline)."""
        return min(self.workers or os.cpu_count() or 1, len(expand_candidates(self)[0]) + 1)


def load_sweep(path) -> SweepSpec:
    """Read a sweep file and check it expands: every recipe and template it names loads, and the
    combinations make sense. Errors name the sweep file first."""
    sweep = load_spec(path, SweepSpec)
    templates = [entry if isinstance(entry, str) else entry.template for entry in sweep.constraints]
    for field, named in (("recipes", sweep.recipes), ("constraints", templates), ("baseline", [sweep.baseline])):
        for file in named:
            check_allowed_path(file, Path(path), field)
    try:
        expand_candidates(sweep)
    except BadInputError as exc:
        raise BadInputError(str(exc), source=str(path)) from None
    return sweep


@dataclass(frozen=True)
class SweepCandidate:
    """One recipe x template (x bound) combination, with the files it came from."""

    recipe: Recipe
    recipe_path: str
    template: ConstraintTemplate
    template_path: str
    bound_overridden: bool = False
    searched: bool = False  # added by the search after the grid

    @property
    def name(self) -> str:
        bound = f"@{self.template.bound:g}" if self.template.bound is not None else ""
        return f"{self.recipe.name}+{self.template.name}{bound}"

    @property
    def is_reduction(self) -> bool:
        return self.template.kind == "reduction"

    def template_yaml(self) -> str:
        """The template as a file of its own (its bound may differ from ``template_path``'s)."""
        return yaml.safe_dump(self.template.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


@dataclass(frozen=True)
class SkippedCandidate:
    name: str
    reason: str


def expand_candidates(sweep: SweepSpec) -> tuple[list[SweepCandidate], list[SkippedCandidate]]:
    """Every runnable combination of the sweep, and the ones that cannot run (with why).

    A weighting recipe cannot feed a Fairlearn reduction (the reduction reweights the data
    itself) or adversarial debiasing, so those pairs are skipped, not failed; paired with a
    learner whose fit takes no sample weights it is an error in the sweep file.
    """
    recipes = [(path, load_recipe(path)) for path in sweep.recipes]
    entries = [entry if isinstance(entry, SweptTemplate) else SweptTemplate(template=entry) for entry in sweep.constraints]
    templates = [(entry, load_constraint_template(entry.template)) for entry in entries]
    for entry, template in templates:
        if entry.bounds and template.constraint is None:
            raise BadInputError(f"template '{entry.template}' has no constraint, so no bound to sweep", field="constraints")
        if entry.bounds and not template.takes_bound:
            raise BadInputError(f"template '{entry.template}' ({template.method}) takes no bound to sweep",
                                field="constraints")
        unknown = sorted(set(entry.recipes or []) - set(sweep.recipes))
        if unknown:
            raise BadInputError(f"template '{entry.template}' names recipes {unknown} the sweep does not list",
                                field="constraints.recipes")
    candidates, skipped = [], []
    for recipe_path, recipe in recipes:
        for entry, template in templates:
            if entry.recipes is not None and recipe_path not in entry.recipes:
                continue
            variants = [(template, False)]
            if entry.bounds:
                variants = [
                    (template.model_copy(update={
                        "bound": bound,
                        "description": f"{template.description.strip()} [bound {bound:g} set by sweep '{sweep.name}' v{sweep.version}]",
                    }), True)
                    for bound in entry.bounds
                ]
            template_path = entry.template
            for variant, overridden in variants:
                candidate = SweepCandidate(recipe, recipe_path, variant, template_path, overridden)
                problem = variant.weighting_problem() if recipe.produces_weights else None
                if problem is None:
                    candidates.append(candidate)
                elif problem[0] == "method":
                    skipped.append(SkippedCandidate(candidate.name, problem[1]))
                else:
                    raise BadInputError(f"template '{template_path}': field '{problem[0]}': {problem[1]} "
                                        f"('{recipe_path}' is one)", field="constraints")
    names = [c.name for c in candidates]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInputError(f"the sweep lists the same candidate more than once: {duplicates}", field="recipes/constraints")
    return candidates, skipped


def baseline_candidate(sweep: SweepSpec) -> SweepCandidate:
    """The unconstrained reference every candidate is gated against (fitted with the candidates)."""
    return SweepCandidate(NO_RECIPE, "", baseline_template(load_constraint_template(sweep.baseline)), sweep.baseline)


def write_chosen_template(candidate: SweepCandidate, directory: Path) -> Path:
    """The chosen template as a file (``RunParams.constraint`` of the promoted run): a swept
    bound makes it differ from the file it came from."""
    if not candidate.bound_overridden:
        return Path(candidate.template_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{candidate.template.name}-bound-{candidate.template.bound:g}.yaml"
    path.write_text(candidate.template_yaml(), encoding="utf-8")
    return path

"""What a remediation run is asked to do: the flow's one parameter.

A pydantic model, so a deployment's parameters, a drift trigger's templated parameters, the CLI
and a test all build the same validated object, and the Prefect UI's "custom run" form shows
its fields with their descriptions.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fairloop.pipeline import RunParams
from fairloop.remedy.sweep.jobs import Runner


class RemediationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="dataset spec file (datasets/NAME.yaml)")
    recipe: str = Field("recipes/none.yaml", description="augmentation recipe (ignored with sweep_file)")
    constraint: str = Field("constraints/gs-dp.yaml", description="constraint template (ignored with sweep_file)")
    policy: str = "policies/default.yaml"
    sweep_file: str | None = Field(None, description="a sweep of recipe x template candidates")
    sensitive: str | None = Field(None, description="the sensitive feature to remediate (default: the spec's first)")
    train_rows: int | None = None
    seed: int = 0
    approval_timeout: int | None = Field(None, description="seconds a reviewer has (default: the policy's)")
    review_poll_seconds: int = 5
    requested_by: str = "unknown"
    requester_verified: bool = False
    extra_training_data: str | None = Field(None, description="raw-format CSV appended to the training pool")
    rerun: bool = Field(False, description="started by a served deployment (drift trigger or schedule)")
    base_model: str | None = Field(None, description="a fitted model to post-process without retraining "
                                                     "(a file, or module:function)")
    trust_base_model: bool = Field(False, description="let base_model be a pickle file")
    runner: Runner = "processes"
    dask_address: str | None = None
    incident: str | None = Field(None, description="the monitor's incident a rerun answers")

    @field_validator("incident", "extra_training_data", "sweep_file", "base_model", mode="before")
    @classmethod
    def _unset_when_rendered_empty(cls, value):
        # a trigger's template renders a missing payload field as '' or 'None'
        return None if value in ("", "None") else value

    def run_params(self) -> RunParams:
        return RunParams(self.dataset, self.recipe, self.constraint, self.policy, self.sensitive, self.train_rows,
                         self.seed, self.extra_training_data, base_model=self.base_model)

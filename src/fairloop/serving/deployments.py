"""The deployments ``fairloop serve`` serves: the scheduled monitor and the remediation rerun."""

from __future__ import annotations

from prefect.events import DeploymentEventTrigger

from fairloop.data.dataset_spec import load_dataset_spec
from fairloop.gates.policy import load_policy
from fairloop.monitor.alerting import DRIFT_EVENT, dataset_resource_id
from fairloop.serving.notify import remediation_tag
from fairloop.serving.reruns import DRIFT_TRIGGER, SCHEDULE


def build_deployments(
    monitor_flow,
    remediation_flow,
    *,
    dataset: str,
    feed: str,
    policy: str,
    recipe: str = "recipes/none.yaml",
    constraint: str = "constraints/gs-dp.yaml",
    sweep_file: str | None = None,
    train_rows: int | None = None,
) -> list:
    """The deployments ``fairloop serve`` serves, with the policy's cron schedules.

    * ``monitor/<dataset>``: checks the latest window of the production ``feed`` on
      ``monitoring.schedule.monitor_cron``;
    * ``remediation/<dataset>``: a ``DeploymentEventTrigger`` on ``fairloop.drift.detected``
      for this dataset starts a rerun with the drifted window appended to its training data
      (``requested_by='drift-trigger'``); on ``remediation_cron``, if set, a scheduled rerun
      (``requested_by='schedule'``). Both are reruns (``rerun=True``): one per incident, remediating
      with the champion's recipe and template or a sweep (``fairloop.serving.reruns``); ``recipe`` and
      ``constraint`` serve until a champion exists.
    """

    spec = load_dataset_spec(dataset)
    schedule = load_policy(policy).monitoring_settings.schedule
    common = {"dataset": dataset, "recipe": recipe, "constraint": constraint, "policy": policy, "train_rows": train_rows,
              "sweep_file": sweep_file, "rerun": True}
    trigger = DeploymentEventTrigger(
        name=f"fairloop-{spec.name}-drift-rerun",
        description=f"Rerun remediation of {spec.name} when the monitor alerts",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": dataset_resource_id(spec.name)},
        parameters={"request": {**common, "requested_by": DRIFT_TRIGGER,  # Prefect renders nested templates
                                "extra_training_data": "{{ event.payload.window_file }}",
                                "incident": "{{ event.payload.incident }}"}},
    )
    remediation = remediation_flow.to_deployment(
        name=spec.name, cron=schedule.remediation_cron, triggers=[trigger],
        parameters={"request": {**common, "requested_by": SCHEDULE}}, tags=["fairloop", spec.name, remediation_tag(spec.name)],
        description=f"Remediation of {spec.name}: triggered by drift alerts, scheduled by the policy",
    )
    monitor = monitor_flow.to_deployment(
        name=spec.name, cron=schedule.monitor_cron, parameters={"dataset": dataset, "window": feed, "policy": policy},
        tags=["fairloop", spec.name], description=f"Drift and fairness monitor of {spec.name} on {feed}",
    )
    return [monitor, remediation]

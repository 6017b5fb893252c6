"""Someone is told: Prefect automations that send each drift alert and each rerun outcome of a
served dataset to a notification block (a webhook, Slack, e-mail: any Prefect notification block).

``fairloop serve --notify-url URL`` saves a Custom Webhook block that POSTs JSON
``{"subject": ..., "body": ...}`` to URL; ``--notify-block SLUG/NAME`` uses a block made in the
Prefect UI instead. Two automations per dataset, replaced on every ``serve``:

* ``fairloop-<dataset>-alert-notify``: on ``fairloop.drift.detected`` for the dataset: the
  window, the metrics that alerted, and where to look (the monitor run's page, the history
  page and command);
* ``fairloop-<dataset>-outcome-notify``: when a run of the served remediation deployment enters
  Paused or Suspended (review requested: why the run exists, its page, and how to decide: the UI's Resume
  form or the ``approve`` / ``reject`` commands) or ends Promoted, GateFailed, AuditBlocked,
  Rejected, Expired, Failed or Crashed (with its reason and page), matched by the deployment's tag.

Bodies are Jinja templates the Prefect server renders: ``flow_run`` is the run the event names
(the remediation run, or the monitor run that emitted the alert). Links are built here, with the
UI address ``serve`` talks to, because the server process may not know its public address.
"""

from __future__ import annotations

from uuid import UUID

from prefect.automations import Automation, EventTrigger, SendNotification
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from fairloop.errors import BadInputError
from fairloop.monitor import DRIFT_EVENT, dataset_resource_id
from fairloop.serving.outcomes import Outcome
from fairloop.serving.runs import flow_run_url, review_commands

# Expired: the server replaces the flow's Expired state with Failed("... never resumed").
# Suspended: a deployment run awaiting review holds no process (fairloop.flows.review); Paused: one that does.
AWAITING_REVIEW = ("Paused", "Suspended")
NOTIFIED_STATES = [*AWAITING_REVIEW, *(o.value for o in Outcome if o is not Outcome.SKIPPED), "Failed", "Crashed"]

RUN_ID = "{{ flow_run.id }}"
STATE = "event.resource['prefect.state-name']"


def alert_body(dataset: str) -> str:

    return (
        "Drift alert on {{ event.resource['prefect.resource.name'] }} (champion {{ event.payload.champion_version }}), "
        "window {{ event.payload.window_start }} .. {{ event.payload.window_end }} ({{ event.payload.rows }} rows): "
        "{% for a in event.payload.alerts %}{{ a.key }} = {{ '%.3f' % a.value }} (threshold {{ a.threshold }}); {% endfor %}\n"
        f"{{% if flow_run %}}Monitor run: {flow_run_url(RUN_ID)}\n{{% endif %}}"
        f"History: `fairloop history {dataset}`{{% if event.payload.history_page %}}, or {{{{ event.payload.history_page }}}}{{% endif %}}"
    )


def outcome_body(dataset: str) -> str:

    run = "Remediation run {{ event.resource['prefect.resource.name'] }} of " + dataset
    reason = ("requested by {{ flow_run.parameters.request.requested_by }}{% if flow_run.parameters.request.extra_training_data %} "
              "after a drift alert, with the window {{ flow_run.parameters.request.extra_training_data }}{% endif %}"
              "{% if flow_run.parameters.request.incident %} (incident {{ flow_run.parameters.request.incident }}){% endif %}; "
              "its gates let it through to a person, who decides whether it is promoted")
    return (
        f"{{% if {STATE} in {AWAITING_REVIEW} %}}{run} awaits review: {reason}.\n"
        f"Decide in the UI: {flow_run_url(RUN_ID)} (Resume: approve or not, your name, a comment), "
        f"or from a shell:\n{review_commands(RUN_ID)}"
        f"{{% else %}}{run}: {{{{ {STATE} }}}}: {{{{ event.resource['prefect.state-message'] }}}}\n"
        f"Run: {flow_run_url(RUN_ID)}{{% endif %}}"
    )


def remediation_tag(dataset: str) -> str:
    """The tag every run of ``remediation/<dataset>`` carries (the outcome automation matches it)."""
    return f"fairloop-remediation-{dataset}"


def webhook_block_id(dataset: str, url: str) -> UUID:
    """Save (or update) the Custom Webhook block ``fairloop-<dataset>`` that POSTs to ``url``."""

    if not url.startswith(("http://", "https://")):
        raise BadInputError(f"notification URL must start with http:// or https://, got {url!r}", field="--notify-url")
    block = CustomWebhookNotificationBlock(
        name=f"fairloop {dataset}", url=url, method="POST", json_data={"subject": "{{subject}}", "body": "{{body}}"},
    )
    return block.save(f"fairloop-{dataset}", overwrite=True)


def named_block_id(slug_and_name: str) -> UUID:
    """The id of an existing notification block given as ``block-type-slug/block-name``."""

    slug, _, name = slug_and_name.partition("/")
    if not name:
        raise BadInputError(f"give the block as TYPE-SLUG/NAME (e.g. slack-webhook/ops), got {slug_and_name!r}",
                            field="--notify-block")
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(name=name, block_type_slug=slug)
        except ObjectNotFound:
            raise BadInputError(f"no notification block {slug_and_name!r} on the Prefect server", field="--notify-block") from None
    if "notify" not in (document.block_schema.capabilities if document.block_schema else []):
        raise BadInputError(f"block {slug_and_name!r} cannot send notifications", field="--notify-block")
    return document.id


def notification_automations(dataset: str, block_id: UUID) -> list:
    """The alert and the outcome automation of ``dataset`` (not yet created)."""


    alert = Automation(
        name=f"fairloop-{dataset}-alert-notify", description=f"Send each drift alert on {dataset}",
        trigger=EventTrigger(expect={DRIFT_EVENT}, match={"prefect.resource.id": dataset_resource_id(dataset)},
                             posture="Reactive", threshold=1),
        actions=[SendNotification(block_document_id=block_id, subject=f"fairloop {dataset}: drift alert",
                                  body=alert_body(dataset))],
    )
    outcome = Automation(
        name=f"fairloop-{dataset}-outcome-notify", description=f"Send each outcome of a served remediation of {dataset}",
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{state}" for state in NOTIFIED_STATES},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": f"prefect.tag.{remediation_tag(dataset)}"},
            posture="Reactive", threshold=1,
        ),
        actions=[SendNotification(
            block_document_id=block_id,
            subject=f"fairloop {dataset}: {{% if {STATE} in {AWAITING_REVIEW} %}}awaiting review{{% else %}}{{{{ {STATE} }}}}{{% endif %}}",
            body=outcome_body(dataset),
        )],
    )
    return [alert, outcome]


def install_notifications(dataset: str, block_id: UUID) -> list[str]:
    """Replace the dataset's notification automations on the server; their names."""

    wanted = notification_automations(dataset, block_id)
    with get_client(sync_client=True) as client:
        for automation in wanted:
            for old in client.read_automations_by_name(automation.name):
                client.delete_automation(old.id)
    return [a.create().name for a in wanted]

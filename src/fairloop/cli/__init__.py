"""The ``fairloop`` command line: the typer ``app`` and its commands, registered in the order ``--help`` lists them.

The commands live by concern in this package's modules: run (remediate, rerun, server, serve),
review (approve, reject, show, reviewers), registry (models, rollback, lineage, reproduce, verify),
monitor (monitor, history), project (init, doctor) and steps (audit, gate, stage).
"""

from __future__ import annotations

import typer

from fairloop.cli import monitor, project, registry, review, run, steps

app = typer.Typer(
    help="fairloop: audit, augment, retrain under fairness constraints, gate, approve, promote, roll back.",
    no_args_is_help=True,
    add_completion=False,
)

for command in (run.remediate, review.approve, review.reject, registry.models, registry.rollback, registry.lineage,
                registry.reproduce, registry.verify, steps.stage, project.init, steps.audit, steps.gate, run.server,
                project.doctor, monitor.monitor, run.serve, review.show):
    app.command()(command)
app.add_typer(review.reviewers_app, name="reviewers")
review.reviewers_app.command("add")(review.reviewers_add)
review.reviewers_app.command("list")(review.reviewers_list)
for command in (monitor.history, run.rerun):
    app.command()(command)


def main() -> None:
    app()

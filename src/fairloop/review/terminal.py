"""The review report in a terminal (``fairloop show``): the same figures as the Resume dialog,
from the same :class:`~fairloop.review.packet.ReviewPacket`, as rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from fairloop.data.groups import ExcludedGroup
from fairloop.gates.evaluate import Evaluation, metrics_table
from fairloop.remedy.sweep.results import SweepOutcome
from fairloop.review.no_candidate import NoCandidateReport
from fairloop.review.packet import RATES, ReviewPacket
from fairloop.templating import format_interval, format_number

VERDICT_STYLE = {"pass": "green", "fail": "red", "inconclusive": "yellow", "skipped": "dim"}


def print_drift(console: Console, judged) -> None:
    """A rerun's first lines: the alert it answers, both models on the held-out drifted rows, and whether approving clears it."""
    if judged.alert is not None:
        for m in judged.alert.metrics:
            console.print(f"Answers the alert {escape(m.key)} = {m.value:.3f} {format_interval((m.low, m.high))} > {m.threshold} on "
                          f"window {escape(judged.alert.window)} (champion {escape(judged.alert.champion_version)}"
                          f"{', incident ' + escape(judged.alert.incident) if judged.alert.incident else ''})", soft_wrap=True)
    colour = {"yes": "green", "no": "red"}.get(judged.clears, "yellow")
    console.print(f"[bold {colour}]Approving clears the alert: {judged.clears}[/bold {colour}] ({escape(judged.why)})",
                  soft_wrap=True)
    table = Table(title=f"On {judged.held_out_rows} held-out drifted rows ({judged.held_out_labelled} labelled)",
                  title_justify="left")
    for column in ("gap", "limit", "champion", "candidate"):
        table.add_column(column, overflow="fold")
    shown = lambda m: "n/a" if m is None else f"{m.value:.3f} {format_interval((m.low, m.high))}"  # noqa: E731
    for f in judged.figures:
        table.add_row(escape(f.key), f"{f.threshold:g}", shown(f.champion), shown(f.candidate))
    if judged.accuracy:
        table.add_row("accuracy (labelled)", "", format_number(judged.accuracy.get("champion")), format_number(judged.accuracy.get("candidate")))
    console.print(table)


NARROW = 120  # columns below which the sweep's eight-column table would break names mid-word


def print_candidates(console: Console, sweep: SweepOutcome) -> None:
    """The sweep's candidates (test figures), most accurate first: a table on a wide console, one
    block of lines per candidate on a narrow one."""
    title = f"Sweep '{escape(sweep.sweep)}': {len(sweep.candidates)} candidates (test figures)"
    columns = ("candidate", "kind", "needs at predict", "acc", "DPD", "EOD", "DI", "validation gates")
    rows = []
    for c in sorted(sweep.candidates, key=lambda c: -c.validation["accuracy"]):
        name = f"[bold]{escape(c.name)}[/bold] (chosen)" if c.name == sweep.chosen else escape(c.name)
        rows.append((name, c.kind, c.needs_at_predict, format_number(c.test["accuracy"], 4),
                     format_number(c.test["demographic_parity_difference"], 4), format_number(c.test["equalized_odds_difference"], 4),
                     format_number(c.test["disparate_impact_ratio"], 3), "pass" if c.passed else "blocked: " + c.gates.blocked_by))
    if console.width >= NARROW:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    console.print(title)
    for name, kind, needs, *figures, gates in rows:
        console.print(name)
        figures = "  ".join(f"{column} {value}" for column, value in zip(columns[3:7], figures))
        console.print(Padding(f"{kind}; reads {needs}\n{figures}\nvalidation gates: {gates}", (0, 0, 0, 2)))


def print_excluded(console: Console, excluded: list[ExcludedGroup], where: str = "") -> None:
    """One line per group a floor of the policy leaves out of some rate: its counts, and why for
    each rate (a group too small for every floor would otherwise repeat its counts three times)."""
    by_group: dict[str, list[ExcludedGroup]] = {}
    for e in excluded:
        by_group.setdefault(str(e.group), []).append(e)
    for group, entries in by_group.items():
        e = entries[0]  # a group's counts are the same for each rate it is left out of
        console.print(f"left out of the group metrics{where}: {escape(group)} ({e.rows} rows, {e.positives} positive, "
                      f"{e.negatives} negative): " + "; ".join(escape(str(x.reason)) for x in entries), soft_wrap=True)


def print_qualifiers(console: Console, p: ReviewPacket) -> None:
    """What qualifies the headline's claims: the sensitive feature's use (and its proxies), the
    requester, and why this candidate."""
    if p.base_model:
        sha = f" (sha256 {p.base_model.sha256})" if p.base_model.sha256 else ""
        console.print(f"Base model not retrained: {p.base_model.kind} model {escape(p.base_model.location)}{sha}; "
                      "every candidate post-processes its scores.")
    if p.needs_sensitive_at_predict:
        console.print(f"[red]Needs {escape(p.sensitive)} at prediction time[/red] (ThresholdOptimizer): disparate "
                      "treatment in many jurisdictions; legal review is required before use.")
    else:
        console.print(f"Group-blind: predicts from the features alone; {escape(p.sensitive)} was used only in "
                      "training and to measure the gates.")
        if p.proxies:
            console.print(f"Not blind to {escape(p.sensitive)} through its proxies: "
                          + ", ".join(f"{escape(x.feature)} (AUC {x.auc:.2f})" for x in p.proxies) + " each alone predict it.")
    if p.requested_by:
        console.print(f"Requested by {escape(p.requested_by)} ({'verified' if p.requester_verified else 'not verified'}).")
    rule, alternatives = p.why_this_candidate()
    if rule:
        console.print(f"Why this candidate: {escape(rule)}")
        for line in alternatives:
            console.print(Padding(f"instead {escape(line)}", (0, 0, 0, 2)))
    if p.sweep is not None:
        print_gate_costs(console, p.sweep)


def print_gate_costs(console: Console, sweep: SweepOutcome) -> None:
    """The gates the audit calls unreliable here: the choice with and without each."""
    for cost in sweep.gate_costs:
        console.print(f"[yellow]unreliable gate:[/yellow] {escape(cost.sentence())}", soft_wrap=False)


def print_packet(console: Console, packet: ReviewPacket, state: str) -> None:
    p = packet
    console.rule(f"Review: {escape(p.dataset)}, sensitive feature {escape(p.sensitive)}  (run {p.run_id}, {escape(state)})")
    console.print(f"[bold]{escape(p.headline())}[/bold]")
    # the dialog's first screen: the decision in people, what gets worse, the gates in one line
    # (wrapped at word boundaries by rich, readable in an 80-column terminal); a rerun's alert after it
    total, people = p.who_gains_and_loses()
    if people:
        console.print(f"Who gains, who loses ({escape(total)}):")
        for line in people:
            console.print(f"  {escape(line)}")
    for w in p.worsening():
        console.print(f"[yellow]worse:[/yellow] {escape(w.detail)}")
    console.print(escape(p.gate_summary()))
    if p.drift is not None:
        print_drift(console, p.drift)
    print_qualifiers(console, p)

    print_group_changes(console, p)
    print_intersections(console, p)

    costs = Table(title="What it costs", title_justify="left")
    for column in ("metric", "reference", "candidate", "drop [interval]"):
        costs.add_column(column)
    for c in p.costs():
        for r in c["references"] or [{"name": "", "value": None, "drop_interval": None}]:
            drop = "" if r["value"] is None else f"{r['value'] - c['candidate']:+.4f} {format_interval(r['drop_interval'], 4)}"
            costs.add_row(c["metric"], f"{r['name']} {format_number(r['value'], 4)}", format_number(c["candidate"], 4), drop)
    console.print(costs)

    gates = Table(title=f"Gates (policy {escape(p.gates.policy)}): {'PASS' if p.gates.passed else 'BLOCKED'}"
                        + (f"; evaluated on {escape(p.evaluation_mode)}" if p.evaluation_mode else ""), title_justify="left")
    for column in ("gate", "verdict", f"value [{p.confidence:.0%}]"):
        gates.add_column(column)
    for g in p.gate_rows():
        style = VERDICT_STYLE.get(g["verdict"], "")
        gates.add_row(g["label"], f"[{style}]{g['verdict']}[/{style}]", f"{format_number(g['value'], 4)} {format_interval(g['interval'], 4)}")
    console.print(gates)
    for line in p.advice:
        console.print(f"- {escape(line)}")

    if p.sweep is not None:
        print_candidates(console, p.sweep)
    console.print(f"Candidate: {escape(p.candidate_label)}; recipe {escape(p.recipe_label)}; current champion: "
                  f"{escape(p.champion_version or 'none')}; training data: audit {p.audit_verdict}, "
                  f"{p.augment.synthetic_rows:,} synthetic rows added.")
    for link in p.links:
        console.print(f"{escape(link.label)}: {escape(link.url)}", soft_wrap=True)
    if p.run_url:
        console.print(f"Decide in the UI ({escape(p.run_url)}, Resume) or with fairloop approve/reject {p.run_id} "
                      f"--reviewer NAME{' --token TOKEN' if p.credentials_required else ''}", soft_wrap=True)


def print_group_changes(console: Console, p: ReviewPacket) -> None:
    changes = Table(title=f"What changes for whom (test rows; {p.confidence:.0%} bootstrap intervals, stratified by group)", title_justify="left")
    for column in ("group", "rows", "rate", "baseline", "candidate"):
        changes.add_column(column, overflow="fold")
    for g in p.group_changes():
        for i, r in enumerate(g.rates):
            changes.add_row(escape(g.group) if i == 0 else "", f"{g.rows:,}" + ("" if g.counted else " (not counted)") if i == 0 else "",
                            r.label, f"{format_number(r.baseline)} {format_interval(r.baseline_interval)}",
                            f"{format_number(r.candidate)} {format_interval(r.candidate_interval)}")
        c = g.calibration
        changes.add_row("", "", "calibration: predicted − observed", f"{format_number(c.baseline_gap)} {format_interval(c.baseline_interval)}",
                        f"{format_number(c.candidate_gap)} {format_interval(c.candidate_interval)}")
        changes.add_section()
    console.print(changes)
    print_excluded(console, p.excluded_groups())


def print_intersections(console: Console, p: ReviewPacket) -> None:
    for v in p.intersection_views():
        table = Table(title=f"Declared intersection {escape(v.name)} (not gated; simultaneous {p.confidence:.0%} intervals): "
                            + "; ".join(f"{m.label} {format_number(m.baseline)} → {format_number(m.candidate)} "
                                        f"{format_interval(m.candidate_interval)}" for m in v.metrics), title_justify="left")
        for column in ("cell", "rows", "selected: baseline", "candidate"):
            table.add_column(column, overflow="fold")
        for c in v.cells:
            table.add_row(escape(c.cell), f"{c.rows:,}" + ("" if c.counted else " (not counted)"), format_number(c.baseline),
                          f"{format_number(c.candidate)} {format_interval(c.candidate_interval)}")
        console.print(table)
        if v.more_cells:
            console.print(f"{v.more_cells} more cells not listed (worst first)")


def print_reference_figures(console: Console, references: dict[str, Evaluation]) -> None:
    """Every test metric of the reference models (baseline, champion), and the baseline's rates by group."""
    table = Table(title="Reference models on the test rows", title_justify="left")
    figures = metrics_table(references)
    for column in ("metric", *figures.columns):
        table.add_column(column, overflow="fold")
    for metric, row in figures.iterrows():
        table.add_row(escape(str(metric)), *(format_number(value, 4) for value in row))
    console.print(table)
    baseline = references["baseline"]
    groups = Table(title="Baseline by group (test rows; a rate the floors leave out is marked)", title_justify="left")
    for column in ("group", "rows", "positives", *(short for short, _ in RATES.values())):
        groups.add_column(column, overflow="fold")
    for group, m in baseline.by_group.items():
        rates = [format_number(m[rate]) + ("" if m.get(f"counted_{rate}", 1.0) else " (not counted)") for rate in RATES]
        groups.add_row(escape(group), f"{int(m['count']):,}", f"{int(m['positives']):,}", *rates)
    console.print(groups)


def print_no_candidate(console: Console, report: NoCandidateReport, state: str) -> None:
    """A run whose sweep chose no candidate: why, every candidate's gates, the reference models'
    test figures and the groups the floors left out; nothing awaits a decision."""
    r, sweep = report, report.sweep
    console.rule(f"No candidate: {escape(r.dataset)}, sensitive feature {escape(r.sensitive)}  (run {r.run_id}, {escape(state)})")
    console.print(f"[bold]{escape(r.headline())}[/bold]")
    console.print(f"The run ended {escape(state)}: there is no review to approve or reject.")
    console.print(f"Why ({escape(sweep.classification or 'unclassified')}):")
    for line in sweep.explanation.splitlines():
        console.print(Padding(escape(line), (0, 0, 0, 2)))
    console.print(f"Gated on the {escape(sweep.selection_rows)} ({escape(sweep.evaluation.reason)}).", soft_wrap=True)
    print_candidates(console, sweep)
    print_gate_costs(console, sweep)
    for name, why in sweep.skipped:
        console.print(f"not fitted: {escape(name)}: {escape(why)}", soft_wrap=True)
    print_reference_figures(console, r.references)
    print_excluded(console, r.excluded_on_test, " on the test rows")
    print_excluded(console, r.excluded_on_selection, f" on the {sweep.selection_rows}")
    console.print(f"Current champion: {escape(r.champion_version or 'none')}; training data: audit {escape(r.audit_verdict)}"
                  + "".join(f"; {escape(reason)}" for reason in r.audit_reasons) + ".", soft_wrap=True)
    if r.requested_by:
        console.print(f"Requested by {escape(r.requested_by)} ({'verified' if r.requester_verified else 'not verified'}).")
    for link in r.links:
        console.print(f"{escape(link.label)}: {escape(link.url)}", soft_wrap=True)
    if r.run_url:
        console.print(f"Run page: {escape(r.run_url)}", soft_wrap=True)

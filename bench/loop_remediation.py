"""Does the loop remediate what it detects? Generated feeds with a known drift, replayed end to end.

For each drift kind of ``tests/drift_world.py`` and each seed: a champion v1 (ExponentiatedGradient x
demographic parity on logistic regression, group-blind) is fitted on generated rows; the monitor checks
two stable windows and then drifted ones until one alerts; the alert's rerun runs the real remediation
flow (on a throw-away Prefect server: pinned window, training part redrawn towards the drift, gates on
the old test split and on the held-out drifted rows) and, if it reaches review, is approved from code;
then the monitor checks the next drifted window against the new champion.

Printed per kind: windows until the alert, reruns started, outcomes, the share of promoted reruns whose
champion clears the alert on the next window, accuracy on the held-out drifted rows (champion ->
candidate), and time from alert to promotion. Targets (issue 24): >= 90 % of correctable drifts
cleared by one rerun; no alert and no promotion without drift; the uncorrectable drift ends blocked,
with its reason, never promoted.

    .venv/bin/python bench/loop_remediation.py [--seeds 3] [--rows 12000] [--window-rows 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))
sys.path.insert(0, str(PROJECT / "tests"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import drift_world as world  # noqa: E402 - tests/ on the path first

from fairloop.flows.request import RemediationRequest  # noqa: E402

TEMPLATE = str(PROJECT / "constraints" / "lr-eg-dp.yaml")
# kind -> (drift arguments, expected: "quiet" no alert, "cleared" by one rerun, "blocked" never promoted)
KINDS = {
    "no drift": ({"kind": "none"}, "quiet"),
    "group share (F 50% -> 90%)": ({"kind": "group_share", "shift": 0.8}, "cleared"),
    "feature shift in F (new channel)": ({"kind": "new_channel", "shift": -1.5}, "cleared"),
    "label shift in F (base rate down)": ({"kind": "label_shift", "shift": -1.5}, "measured"),
    "true shift in F (uncorrectable)": ({"kind": "true_shift", "shift": -1.5}, "blocked"),
}
MAX_DRIFTED_WINDOWS = 3


def write_policy(folder: Path) -> Path:
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump({
        "name": "loop-bench", "version": 1,
        "thresholds": {"max_demographic_parity_difference": 0.05, "max_accuracy_drop_vs_baseline": 0.03},
        "bootstrap": {"n_boot": 300, "confidence": 0.95, "seed": 0},
        "monitoring": {"window_days": 28, "window_origin": world.month(0), "keep_window_rows": 10,
                       "max_equalized_odds_difference": 0.1, "rerun": {"held_out_share": 0.5}},
    }))
    return path


def approve_when_paused(flow_run_id_box: dict, done: threading.Event) -> None:
    """The reviewer: approves the rerun as soon as it awaits review."""
    from fairloop.serving.runs import find_tagged_run, read_flow_run, submit_review

    while not done.is_set():
        run = find_tagged_run(flow_run_id_box["tag"])
        if run is not None:
            run = read_flow_run(run.id)
            if run.state and run.state.is_paused():
                flow_run_id_box["paused_at"] = time.perf_counter()
                submit_review(run.id, {"approve": True, "reviewer": "bench-reviewer", "comment": "bench approval",
                                       "accept_inconclusive_risk": True})
                return
            if run.state and run.state.is_final():
                return
        time.sleep(0.5)


def replay(kind: str, drift: dict, seed: int, rows: int, window_rows: int, flow) -> dict:
    from prefect import tags

    from fairloop import monitor as core
    from fairloop.registry.store import Registry

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        os.environ.update({"FAIRLOOP_STATE_DIR": str(folder / "state"), "FAIRLOOP_REGISTRY_DIR": str(folder / "registry"),
                           "FAIRLOOP_REGISTRY_REMOTE": str(folder / "remote"), "FAIRLOOP_PROJECT_DIR": str(PROJECT)})
        state = folder / "state"
        spec = world.write_spec(folder / "data", "gen", world.draw(rows, seed * 100))
        policy = write_policy(folder)
        registry = Registry(folder / "registry", folder / "remote")
        world.promote_champion(spec, policy, registry, TEMPLATE)
        windows = [world.draw(window_rows, seed * 100 + 1), world.draw(window_rows, seed * 100 + 2)]
        result = {"kind": kind, "seed": seed, "alerts_before_drift": 0, "windows_to_alert": None, "outcome": None,
                  "reason": "", "cleared_next": None, "accuracy": {}, "seconds_to_promotion": None, "promotions": 0}
        reports = core.run_monitor(spec, world.feed(windows, folder / "feed.csv"), policy, registry, state, every_window=True)
        result["alerts_before_drift"] = sum(r.alert for r in reports)
        alert = None
        for k in range(MAX_DRIFTED_WINDOWS):
            windows.append(world.draw(window_rows, seed * 100 + 10 + k, **drift))
            (report,) = core.run_monitor(spec, world.feed(windows, folder / "feed.csv"), policy, registry, state)
            if report.alert:
                alert, result["windows_to_alert"] = report, k + 1
                break
        if alert is None:
            return result
        box, done = {"tag": f"bench-{seed}-{time.time_ns()}"}, threading.Event()
        reviewer = threading.Thread(target=approve_when_paused, args=(box, done), daemon=True)
        reviewer.start()
        started = time.perf_counter()
        with tags(box["tag"]):
            final = flow(request=RemediationRequest(
                dataset=str(spec), policy=str(policy), rerun=True, requested_by="drift-trigger",
                extra_training_data=alert.window_file, review_poll_seconds=1), return_state=True)
        done.set()
        result["outcome"], result["reason"] = final.name, (final.message or "")[:300]
        packets = list((state / "runs").glob("*/review.json"))
        if packets:
            judged = json.loads(packets[0].read_text()).get("drift") or {}
            result["accuracy"] = judged.get("accuracy", {})
            result["clears_at_review"] = judged.get("clears")
        if final.name == "Promoted":
            result["promotions"] = 1
            result["seconds_to_promotion"] = round(time.perf_counter() - started, 1)
            windows.append(world.draw(window_rows, seed * 100 + 20, **drift))
            (after,) = core.run_monitor(spec, world.feed(windows, folder / "feed.csv"), policy, registry, state)
            result["cleared_next"] = not after.alert
            result["still_alerting"] = [m.key for m in after.alerts]
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=12000, help="training rows of each generated dataset")
    parser.add_argument("--window-rows", type=int, default=3000)
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), help="subset of the drift kinds")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results" / "loop_remediation.json")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    results = []
    with prefect_test_harness(server_startup_timeout=180):
        from fairloop.flows import remediation as flow
        for kind in args.kinds:
            drift, _ = KINDS[kind]
            for seed in range(args.seeds):
                results.append(replay(kind, drift, seed, args.rows, args.window_rows, flow))
                print(json.dumps(results[-1]), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1))

    print(f"\n{'kind':36} {'expect':8} {'alerts(no drift)':>16} {'windows to alert':>16} {'outcomes':28} "
          f"{'cleared next':>12} {'acc champ->cand':>16} {'s to promote':>12}")
    for kind in args.kinds:
        mine = [r for r in results if r["kind"] == kind]
        expected = KINDS[kind][1]
        outcomes = {}
        for r in mine:
            outcomes[r["outcome"] or "no alert"] = outcomes.get(r["outcome"] or "no alert", 0) + 1
        promoted = [r for r in mine if r["outcome"] == "Promoted"]
        cleared = f"{sum(bool(r['cleared_next']) for r in promoted)}/{len(promoted)}" if promoted else "-"
        accuracy = [r["accuracy"] for r in mine if r["accuracy"].get("candidate") is not None]
        acc = (f"{sum(a['champion'] for a in accuracy) / len(accuracy):.3f}->{sum(a['candidate'] for a in accuracy) / len(accuracy):.3f}"
               if accuracy else "-")
        to_alert = [r["windows_to_alert"] for r in mine if r["windows_to_alert"]]
        seconds = [r["seconds_to_promotion"] for r in promoted]
        print(f"{kind:36} {expected:8} {sum(r['alerts_before_drift'] for r in mine):>16} "
              f"{(f'{sum(to_alert) / len(to_alert):.1f}' if to_alert else 'never'):>16} "
              f"{', '.join(f'{k} {v}' for k, v in outcomes.items()):28} {cleared:>12} {acc:>16} "
              f"{(f'{sum(seconds) / len(seconds):.0f}' if seconds else '-'):>12}")
    correctable = [r for r in results if KINDS[r["kind"]][1] == "cleared"]
    cleared = sum(bool(r["cleared_next"]) for r in correctable)
    print(f"\ncorrectable drifts cleared by one rerun: {cleared}/{len(correctable)} (target >= 90 %)")
    quiet = [r for r in results if KINDS[r["kind"]][1] == "quiet"]
    print(f"no-drift feed: {sum(r['windows_to_alert'] is not None for r in quiet)} alert(s), "
          f"{sum(r['promotions'] for r in quiet)} promotion(s) (target 0 and 0)")
    for r in results:
        if KINDS[r["kind"]][1] == "blocked":
            print(f"uncorrectable seed {r['seed']}: {r['outcome']} — {r['reason'][:200]}")


if __name__ == "__main__":
    main()

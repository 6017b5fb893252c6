"""A real registry operation in its own process, for the crash tests: it prints each step of the
transaction as it reaches it and, at the step named on the command line, waits to be killed.

    python crash_child.py ROOT REMOTE CANDIDATE_DIR promote|rollback STEP [VERSION]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import joblib

from fairloop.registry import repository as registry_module
from fairloop.registry.lineage import Lineage
from fairloop.registry.store import Registry


def main() -> None:
    root, remote, candidate_dir, operation, stop_at = sys.argv[1:6]

    def hook(step: str) -> None:
        print(f"step {step}", flush=True)
        if step == stop_at:
            print(f"AT {step}", flush=True)
            time.sleep(3600)  # the test kills us here

    registry_module.STEP_HOOK = hook
    registry = Registry(Path(root), Path(remote))
    if operation == "promote":
        folder = Path(candidate_dir)
        parts = joblib.load(folder / "candidate.joblib")
        registry.promote(
            "tiny", parts["model"], parts["train"], metrics=parts["metrics"], baseline_metrics=parts["baseline_metrics"],
            gates=[], lineage=Lineage.model_validate_json((folder / "lineage.json").read_text()),
            approval={"reviewer": "crash-test", "comment": "", "approved": True},
            documents=lambda version: {"report.md": f"report {version}\n"}, inputs_dir=folder / "inputs",
        )
    else:
        registry.rollback("tiny", sys.argv[6], reviewer="crash-test", reason="crash test")
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main()

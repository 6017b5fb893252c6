"""Production monitoring: drift and fairness of production windows against the champion's training data.

For one window (features, optional labels, optional timestamps; predictions from the champion
unless the window carries them) the monitor measures, against the real (non-synthetic) rows of
the champion's training snapshot:

* per feature: drift of numeric and categorical features, over all rows and within each group
  of the champion's sensitive feature (``drift``);
* the groups' shares, the prediction-rate gap between groups (needs no labels) and, on rows
  with labels, demographic-parity and equalized-odds differences (``fairness``).

Every metric has a threshold (the policy's ``monitoring`` section) and an interval. A breach is
a value above its threshold; an **alert** fires only when the breach persists for
``persistence_windows`` consecutive windows or its interval lies wholly above the threshold,
so one noisy window does not retrain anything (``alerting``).

One concern per module:

* ``windows``: reading production rows, splitting them into windows, a window's identity;
* ``drift``: drift statistics; ``fairness``: fairness in production;
* ``report``: the typed records (``Metric``, ``WindowReport``);
* ``alerting``: judge (breach, streak, alert) and the drift event;
* ``store``: the monitor's state on disk; ``plots``: plots and Markdown of checked windows;
* ``check``: one window against the champion, and ``run_monitor`` over a file;
* ``deployments``: what ``fairloop serve`` serves.

Plain functions and pydantic models; the Prefect flow (``flows/monitor.py``) only adds
artifacts and the drift event.
"""

from fairloop.data.rows import Rows
from fairloop.monitor.alerting import (
    DRIFT_EVENT,
    dataset_resource_id,
    drift_event,
    judge,
)
from fairloop.monitor.check import (
    Champion,
    check_window,
    load_champion,
    run_monitor,
    to_json,
)
from fairloop.monitor.plots import plot_series, plot_window, summary_markdown
from fairloop.monitor.report import Metric, WindowReport
from fairloop.monitor.store import (
    enforce_retention,
    history,
    record,
    resolve_window_file,
    state_folder,
)
from fairloop.monitor.windows import (
    Window,
    latest_window,
    read_window,
    reference_rows,
    refuse_held_out_overlap,
    split_windows,
)

__all__ = [
    "DRIFT_EVENT", "Champion", "Metric", "Rows", "Window", "WindowReport", "check_window", "dataset_resource_id",
    "drift_event", "judge", "history", "resolve_window_file", "enforce_retention", "latest_window", "load_champion", "plot_series", "plot_window",
    "read_window", "record", "reference_rows", "refuse_held_out_overlap", "run_monitor", "split_windows", "state_folder", "summary_markdown",
    "to_json",
]

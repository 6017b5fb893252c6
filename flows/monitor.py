"""Entry file for Prefect tooling that names flows by file (`prefect deploy flows/monitor.py:monitor`).

The flow lives in the package, ``fairloop.flows.monitor``; this file only re-exports it.
"""

from fairloop.flows.monitor import monitor

__all__ = ["monitor"]

"""Entry file for Prefect tooling that names flows by file (`prefect deploy flows/remediation.py:remediation`).

The flow lives in the package, ``fairloop.flows.remediation``; this file only re-exports it.
"""

from fairloop.flows.remediation import remediation

__all__ = ["remediation"]

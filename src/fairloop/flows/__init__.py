"""The Prefect flows: thin composition of the library below them.

``remediation`` runs audit -> augment -> retrain -> gate -> review -> promote for one dataset;
``monitor`` checks a production window against the champion and emits the drift event that
triggers a remediation rerun. Import them from here (``from fairloop.flows import remediation``);
deployments name them by module entrypoint, so a project never carries a copy of the flow code.
"""

from fairloop.flows.monitor import monitor
from fairloop.flows.remediation import remediation

__all__ = ["monitor", "remediation"]

"""Write actions under human approval: a durable queue (``store``) and the gate and decisions (``queue``)."""

from portico.actions.approvals.queue import ApprovalQueue, public
from portico.actions.approvals.store import STATUSES, ApprovalStore

__all__ = ["STATUSES", "ApprovalQueue", "ApprovalStore", "public"]

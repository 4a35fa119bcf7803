"""The gateway: providers, deployments, fallbacks (and, in later issues, keys, limits, budgets, cost)."""

from portico.gateway.gateway import Gateway
from portico.gateway.step import GenerateStep

__all__ = ["Gateway", "GenerateStep"]

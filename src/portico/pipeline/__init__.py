"""The request pipeline: a context object passed through declared steps, in order or in parallel groups."""

from portico.pipeline.context import Attempt, RequestContext
from portico.pipeline.runner import Parallel, Pipeline, PipelineError
from portico.pipeline.step import Step

__all__ = ["Attempt", "Parallel", "Pipeline", "PipelineError", "RequestContext", "Step"]

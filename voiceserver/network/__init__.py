"""Agent networks: a routing agent picks, step by step, which of its agents, workflows and tools serves a task.

    stream = run_network(agent, "Find the weather in Paris and suggest what to wear",
                         memory={"resource": "user-1", "thread": "t-1"}, max_steps=5)
    async for event in stream:            # routing-agent-start, tool-execution-start, ... (see .stream)
        ...
    result = await stream.result()

``Agent.network(...)`` calls :func:`run_network`. See docs/networks.md.
"""

from .api import (
    approve_network_tool_call,
    decline_network_tool_call,
    list_network_runs,
    resume_network,
    run_network,
)
from .errors import NetworkError
from .routing import CompletionCheck, Primitive, RoutingDecision, StepRecord
from .stream import NetworkEvent, NetworkResult, NetworkStream

__all__ = [
    "CompletionCheck",
    "NetworkError",
    "NetworkEvent",
    "NetworkResult",
    "NetworkStream",
    "Primitive",
    "RoutingDecision",
    "StepRecord",
    "approve_network_tool_call",
    "decline_network_tool_call",
    "list_network_runs",
    "resume_network",
    "run_network",
]

"""The network's error type. A :class:`NetworkError` is an :class:`~voiceserver.runs.errors.AgentError`, so code
that already handles agent errors (the HTTP layer, the voice session) handles network errors the same way.

Codes: ``memory_required``, ``invalid_option``, ``invalid_input``, ``invalid_id``, ``invalid_routing_decision``,
``unknown_primitive``, ``run_not_found``, ``run_not_owned``, ``run_not_suspended``, ``not_awaiting_approval``,
``not_suspended``, ``unknown_tool_call``, ``invalid_resume_data``, ``structured_output_invalid``,
``structured_output_unavailable``, ``network_failed``.
"""

from __future__ import annotations

from ..runs.errors import AgentError


class NetworkError(AgentError):
    """A network failure with a stable ``code`` and a message that says what to do."""

"""Errors raised by the agent package. Each carries a stable ``code`` a client or a session can act on.

:class:`AgentError`, :class:`StructuredOutputError` and :class:`AgentConfigError` are defined in
:mod:`voiceserver.runs.errors` (networks and import paths raise them too) and importable from here.
"""

from __future__ import annotations

from ..runs.errors import AgentConfigError, AgentError, StructuredOutputError

__all__ = ["AgentConfigError", "AgentError", "StructuredOutputError", "ToolDefinitionError"]


class ToolDefinitionError(ValueError):
    """A tool was defined wrongly (bad id, missing description, unsupported signature)."""

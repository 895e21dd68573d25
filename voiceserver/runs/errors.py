"""The errors of runs (agent runs and network runs). Each carries a stable ``code`` a client or a session can act on.

:class:`AgentError` is the base of every run error (a network's ``NetworkError`` is one too), so code that catches
it catches failures of sub-agents and networks alike.
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """An agent failure with a code (``run_not_found``, ``invalid_input``, ``structured_output_invalid``, ...).

    When a run fails, ``result`` holds the partial :class:`~voiceserver.agent.chunks.AgentResult` (text so far, tool
    calls, usage) so a caller can still see what happened.
    """

    def __init__(self, code: str, message: str, *, result: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.result = result

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class StructuredOutputError(AgentError):
    """The model's final answer is not valid JSON of the requested schema (``error_strategy="strict"``)."""

    def __init__(self, message: str, *, raw_text: str = ""):
        super().__init__("structured_output_invalid", message)
        self.raw_text = raw_text


class AgentConfigError(ValueError):
    """An agent or tool declared in the settings could not be built (bad import path, unknown sub-agent, ...)."""

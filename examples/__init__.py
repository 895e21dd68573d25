"""Runnable examples of the voiceserver agent library (see docs/agents.md)."""

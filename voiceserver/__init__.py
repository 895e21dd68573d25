"""voiceserver: a realtime voice assistant server and the agent library inside it."""

__version__ = "0.1.0"

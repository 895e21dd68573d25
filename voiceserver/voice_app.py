"""The application container (the role of Mastra's instance): agents, workflows, storage, logger and voice,
registered once and looked up by id.

    app = VoiceApp(agents={"assistant": assistant}, workflows={"book": booking}, storage=LanceDBStore("./data"))
    app.get_agent("assistant"); app.get_workflow("book")

Serve it with ``voiceserver serve --app mypackage.module:app`` (the settings still choose host, port, engines and
limits), or build a server in code with ``build_server(settings, app=app)``. Registering shares the container's
storage with every agent and workflow that has none of their own, so their suspended runs persist in one place.
"""

from __future__ import annotations

from typing import Any

from .logs import ComponentLogger, get_logger
from .runs.store import InMemoryRunStore, RunStore


class VoiceApp:
    """Agents, workflows, storage, logger and voice of one application."""

    def __init__(self, *, agents: dict[str, Any] | None = None, workflows: dict[str, Any] | None = None,
                 storage: RunStore | None = None, logger: ComponentLogger | None = None, voice: Any = None,
                 memory: Any = None):
        self.storage = storage
        self.logger = logger or get_logger("SERVER")
        self.voice = voice
        self.memory = memory
        self._agents: dict[str, Any] = {}
        self._workflows: dict[str, Any] = {}
        for key, agent in (agents or {}).items():
            self.add_agent(agent, key)
        for key, workflow in (workflows or {}).items():
            self.add_workflow(workflow, key)

    def add_agent(self, agent: Any, key: str | None = None) -> None:
        """Register an agent under ``key`` (default its name). Its storage defaults to the container's."""
        key = key or agent.name
        if key in self._agents and self._agents[key] is not agent:
            raise ValueError(f"an agent named {key!r} is already registered")
        if self.storage is not None and getattr(agent, "_storage", "unset") is None:
            agent._storage = self.storage
        if self.voice is not None and getattr(agent, "_voice", "unset") is None:
            agent._voice = self.voice
        self._agents[key] = agent

    def add_workflow(self, workflow: Any, key: str | None = None) -> None:
        """Register a workflow under ``key`` (default its id). A workflow on the default in-process store moves
        to the container's storage, so its runs survive the process."""
        key = key or workflow.id
        if key in self._workflows and self._workflows[key] is not workflow:
            raise ValueError(f"a workflow with id {key!r} is already registered")
        if self.storage is not None and isinstance(getattr(workflow, "storage", None), InMemoryRunStore):
            workflow.storage = self.storage
        self._workflows[key] = workflow

    def get_agent(self, key: str) -> Any:
        """The agent registered under ``key`` (or whose id is ``key``); KeyError naming the known ones."""
        if key in self._agents:
            return self._agents[key]
        for agent in self._agents.values():
            if getattr(agent, "id", None) == key:
                return agent
        raise KeyError(f"no agent {key!r}; registered: {', '.join(self._agents) or 'none'}")

    def get_agents(self) -> dict[str, Any]:
        return dict(self._agents)

    def get_workflow(self, key: str) -> Any:
        """The workflow registered under ``key``; KeyError naming the known ones."""
        if key in self._workflows:
            return self._workflows[key]
        raise KeyError(f"no workflow {key!r}; registered: {', '.join(self._workflows) or 'none'}")

    def find_workflow(self, key: str) -> Any | None:
        """Like get_workflow, but None when unknown (for HTTP routes that answer 404)."""
        return self._workflows.get(key)

    def get_workflows(self) -> dict[str, Any]:
        return dict(self._workflows)

    def get_storage(self) -> RunStore | None:
        return self.storage

    def get_logger(self) -> ComponentLogger:
        return self.logger

    def get_voice(self) -> Any:
        return self.voice

"""Agents declared in the settings file: tools and workflows by import path, sub-agents by name.

    agents:
      - name: Researcher
        instructions: Find facts.
        model: openai/gpt-4o-mini
        tools: ["my_tools.weather:weather"]
      - name: Assistant
        model: local/smollm2
        agents: ["Researcher"]          # offered to the model as the tool "agent-researcher"

``build_agents(settings.agents, model_registry=..., memory_factory=..., voice_factory=...)`` builds them in
dependency order. Every problem is an :class:`AgentConfigError` naming the agent and the import path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ..runs.loading import load_object
from ..runs.ports import is_workflow
from ..runs.prompt import DEFAULT_PROMPT_BUDGET_TOKENS
from .agent import Agent, slug_id
from .errors import AgentConfigError
from .tools import Tool


def load_tool(path: str) -> Tool:
    """Import a tool; a plain function gets a hint to decorate it."""
    obj = load_object(path)
    if isinstance(obj, Tool):
        return obj
    hint = " (a function: decorate it with @tool or wrap it with create_tool)" if callable(obj) else ""
    raise AgentConfigError(f"{path!r} is not a tool: it is a {type(obj).__name__}{hint}")


def load_workflow(path: str) -> Any:
    obj = load_object(path)
    if not is_workflow(obj):
        raise AgentConfigError(f"{path!r} is not a workflow (it needs input_schema and create_run())")
    return obj


def build_agents(
    configs: Sequence[Any],
    *,
    model_registry: Any = None,
    memory_factory: Callable[[Any], Any] | None = None,
    voice_factory: Callable[[Any], Any] | None = None,
    storage: Any = None,
) -> dict[str, Agent]:
    """Build ``voiceserver.settings.AgentConfig`` entries into agents, keyed by name.

    ``memory_factory(config.memory)`` returns a Memory or None (not called when ``memory.type`` is "none");
    ``voice_factory(config.voice)`` returns a CompositeVoice or None. ``storage`` is the RunStore for suspended runs
    (default: each agent's memory store, else in-process).
    """
    by_name: dict[str, Any] = {}
    ids: dict[str, str] = {}
    for config in configs:
        if config.name in by_name:
            raise AgentConfigError(f"two agents are named {config.name!r}")
        agent_id = slug_id(config.name)
        if agent_id in ids:
            raise AgentConfigError(f"agents {ids[agent_id]!r} and {config.name!r} have the same id {agent_id!r}")
        by_name[config.name] = config
        ids[agent_id] = config.name
    for config in configs:
        for sub in config.agents:
            if sub not in by_name:
                known = ", ".join(sorted(by_name)) or "none"
                raise AgentConfigError(f"agent {config.name!r} uses unknown agent {sub!r}; configured: {known}")

    built: dict[str, Agent] = {}
    visiting: list[str] = []

    def build(name: str) -> Agent:
        if name in built:
            return built[name]
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name):], name])
            raise AgentConfigError(f"agents use each other in a cycle: {cycle}")
        visiting.append(name)
        config = by_name[name]
        subs = {re.sub(r"[^A-Za-z0-9_-]+", "-", slug_id(sub)): build(sub) for sub in config.agents}
        visiting.pop()
        built[name] = _build_one(config, subs, model_registry, memory_factory, voice_factory, storage)
        return built[name]

    for config in configs:
        build(config.name)
    return {config.name: built[config.name] for config in configs}


def _build_one(config: Any, subs: dict[str, Agent], model_registry: Any, memory_factory: Any,
               voice_factory: Any, storage: Any) -> Agent:
    where = f"agent {config.name!r}"
    tools: dict[str, Tool] = {}
    for path in config.tools:
        try:
            tool = load_tool(path)
        except AgentConfigError as exc:
            raise AgentConfigError(f"{where}: {exc}") from None
        if tool.id in tools:
            raise AgentConfigError(f"{where}: two tools have the id {tool.id!r}")
        tools[tool.id] = tool
    workflows: dict[str, Any] = {}
    for path in getattr(config, "workflows", []) or []:
        try:
            workflow = load_workflow(path)
        except AgentConfigError as exc:
            raise AgentConfigError(f"{where}: {exc}") from None
        key = re.sub(r"[^A-Za-z0-9_-]+", "-", str(getattr(workflow, "id", None) or path.split(":")[1]))
        workflows[key] = workflow
    memory_config = getattr(config, "memory", None)
    memory = None
    if memory_factory is not None and memory_config is not None and getattr(memory_config, "type", None) != "none":
        memory = memory_factory(memory_config)
    voice = voice_factory(config.voice) if voice_factory is not None else None
    try:
        return Agent(name=config.name, description=config.description, instructions=config.instructions,
                     model=config.model, tools=tools, agents=subs, workflows=workflows, memory=memory, voice=voice,
                     model_registry=model_registry, storage=storage,
                     prompt_budget_tokens=getattr(config, "prompt_budget_tokens", DEFAULT_PROMPT_BUDGET_TOKENS),
                     warm_next_prompt=getattr(config, "warm_next_prompt", True),
                     voice_mode="network" if getattr(config, "network", False) else "agent")
    except (ValueError, TypeError) as exc:
        raise AgentConfigError(f"{where}: {exc}") from None

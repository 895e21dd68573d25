"""The answerer of a Realtime session: the configured agent, with what the Realtime client asks for on top.

:class:`RealtimeAnswerer` is an :class:`~voiceserver.session.agent_adapter.AgentAdapter` (the session's AgentPort)
over an agent derived from the configured one: the same model, tools, sub-agents, workflows, memory and run
storage (so server-side tools, approvals, workflows and per-caller memory keep working), plus

- the client's function tools, each a tool that suspends the run: the call becomes a ``function_call`` item the
  client runs; its ``function_call_output`` and the next ``response.create`` resume the run
  (``agent.resume_stream``), and the model goes on with the result;
- the session's (or the response's) ``instructions``, ``tool_choice``, ``max_output_tokens`` and temperature;
- the conversation's items as input: what was created since the last response is the new input; an agent without
  memory is also given the items before it as its context; ``conversation: "none"`` and ``input`` run without
  memory and keep nothing;
- the voice of the session or response (mapped to the server's voices: :func:`speaking_voice`), or no speech at
  all for text-only output.

What it learns per turn (function calls, finish reason, usage) it writes into the connection's
:class:`~voiceserver.gateway.realtime_state.RealtimeConversation`, keyed by the turn id.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from ..agent import Agent, create_tool
from ..agent.tools import Tool, ToolContext
from ..logs import get_logger
from ..session.agent_adapter import AgentAdapter
from ..session.agent_port import PendingApproval, PendingWorkflow, SpeakingVoice, TurnRequest, translate_agent_chunk
from ..tts.base import TextToSpeech
from ..tts.fallback import FallbackTTS
from ..tts.openai import OPENAI_VOICES
from .realtime_response import RealtimeResponse
from .realtime_shapes import FunctionTool, ResponseParams, item_text
from .realtime_state import RealtimeConversation

log = get_logger("GATEWAY")
# Input of a response that has no new items: the model answers the conversation as it stands.
RESPOND_NOW = "Continue the conversation: respond to the user now."
MAX_AGENTS = 8  # derived agents kept per connection (one per distinct set of client tools)
MAX_STREAMS = 16  # finished turns whose memory a later truncate may still correct
MAX_WAITING_CALLS = 64  # client function calls waiting for their output


class SilentVoice(TextToSpeech):
    """Speaks nothing: text-only responses go through the same reply path without synthesis."""

    provider = "silent"

    async def synthesize(self, text: str, voice: str | None = None, speed: float | None = None
                         ) -> AsyncIterator[Any]:
        return
        yield  # an async generator that ends at once


SILENT = SilentVoice()


def speaking_voice(default: SpeakingVoice, name: str | None, speed: float, audio: bool) -> SpeakingVoice:
    """The voice for a Realtime voice name (documented in docs/protocol.md): Piper voices answer to their own
    names, the OpenAI voice names reach an OpenAI speech engine as they are, and any other name is spoken by the
    configured voice (the embedded Piper voice speaks every OpenAI name)."""
    if not audio:
        return SpeakingVoice(SILENT)
    engines = default.tts.engines if isinstance(default.tts, FallbackTTS) else [default.tts]
    speaker = default.speaker
    if name and all(e.provider == "piper" for e in engines):
        if all(name in e.capabilities.voices for e in engines):
            speaker = name
    elif name and all(e.provider == "openai-tts" for e in engines) and name in OPENAI_VOICES:
        speaker = name
    return SpeakingVoice(default.tts, speaker, speed if speed != 1.0 else default.speed)


def client_tool(function: FunctionTool) -> Tool:
    """A function the client runs: the call suspends the run until its output comes back."""

    async def execute(args: Any, ctx: ToolContext) -> Any:
        if ctx.resume_data is None:
            await ctx.suspend({"function_call": function.name})
        data = ctx.resume_data
        return data.get("output", "") if isinstance(data, dict) else str(data)

    return create_tool(id=function.name, description=function.description or f"The function {function.name}.",
                       input_schema=function.parameters or {"type": "object", "properties": {}}, execute=execute,
                       timeout_s=None)


def item_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversation items as chat messages (function calls paired with their outputs; unpaired halves left out)."""
    outputs = {i["call_id"] for i in items if i.get("type") == "function_call_output"}
    calls = {i["call_id"] for i in items if i.get("type") == "function_call"}
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "message":
            text = item_text(item)
            if text:
                messages.append({"role": item["role"], "content": text})
        elif kind == "function_call" and item["call_id"] in outputs:
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": item["call_id"], "type": "function",
                 "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}}]})
        elif kind == "function_call_output" and item["call_id"] in calls:
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item.get("output", "")})
    return messages


class RealtimeStream:
    """A TurnStream over one or more runs (a resumed run may suspend again for the next output it already has)."""

    records = True  # the answerer decides what is kept (out-of-band responses keep nothing)

    def __init__(self) -> None:
        self.actions: AsyncIterator[Any] | None = None
        self.run: Any = None  # the AgentStream being read

    def __aiter__(self) -> AsyncIterator[Any]:
        assert self.actions is not None
        return self.actions

    async def cancel(self, heard_text: str | None = None) -> None:
        if self.actions is not None:
            with contextlib.suppress(RuntimeError):
                await self.actions.aclose()  # type: ignore[attr-defined]
        if self.run is not None:
            await self.run.cancel(heard_text=heard_text)


class RealtimeAnswerer(AgentAdapter):
    """See the module notes."""

    def __init__(self, agent: Agent, *, key: str, state: RealtimeConversation, server_tts: TextToSpeech,
                 base_instructions: str):
        self._base = agent
        self._current: Agent | None = None
        super().__init__(agent, key=key)
        self.state = state
        self.server_tts = server_tts
        self.base_instructions = base_instructions  # the configured agent's, as the session first reported them
        self._instructions: str | None = None
        self._agents: OrderedDict[tuple, tuple[Agent, frozenset[str]]] = OrderedDict()
        self._streams: OrderedDict[str, RealtimeStream] = OrderedDict()
        self._waiting_calls: dict[str, str] = {}  # call_id -> run_id of a run suspended at a client function

    @property
    def agent(self) -> Agent:  # the derived agent of the response being answered (AgentAdapter reads this)
        return self._current or self._base

    @agent.setter
    def agent(self, value: Agent) -> None:
        self._base = value

    # --- voice -------------------------------------------------------------------------------------------------

    def voice(self) -> SpeakingVoice:
        default = super().voice() or SpeakingVoice(self.server_tts)
        upcoming = self.state.port_requests[0] if self.state.port_requests else None
        settings = self.state.settings
        audio = upcoming.audio_output if upcoming is not None else settings.audio_output
        name = upcoming.voice if upcoming is not None else settings.voice
        return speaking_voice(default, name, settings.speed, audio)

    # --- turns -------------------------------------------------------------------------------------------------

    async def open_turn(self, request: TurnRequest) -> Any:
        state = self.state
        response = state.port_requests.popleft() if state.port_requests else None
        params = response.params if response is not None else ResponseParams()
        settings = state.settings
        if self._base.voice_mode == "network":
            state.consume(state.conversation.pending(request.turn_id), request.turn_id)
            return await super().open_turn(request)  # an agent network answers as in any voice session
        tools = params.tools if params.tools is not None else settings.tools
        agent, client_names = await self._agent_with(tools)
        self._current = agent
        instructions = params.instructions if params.instructions is not None else settings.instructions
        self._instructions = None if instructions == self.base_instructions else instructions
        options = self._options(request, response, params)
        stream = RealtimeStream()
        outputs = [i for i in state.conversation.pending(request.turn_id)
                   if i["type"] == "function_call_output" and i["call_id"] in self._waiting_calls]
        if outputs and not params.out_of_band and params.input is None:
            state.consume(outputs, None)
            stream.actions = self._resumed(stream, outputs, request.turn_id, client_names)
        else:
            memory, messages = self._input(request, response, params)
            stream.run = agent.stream(messages, memory=memory, **options)
            stream.actions = self._actions(stream.run, request.turn_id, client_names)
        self._keep(request.turn_id, stream)
        return stream

    def _input(self, request: TurnRequest, response: RealtimeResponse | None,
               params: ResponseParams) -> tuple[dict[str, str] | None, list[dict[str, Any]]]:
        """(memory, messages) of a new run: the new items, and the context an agent without memory needs."""
        conversation = self.state.conversation
        if params.input is not None:  # the client gave this response its own context: no memory, nothing kept
            items = [conversation.get(i["id"]) if i.get("type") == "item_reference" else i for i in params.input]
            return None, item_messages([i for i in items if i is not None]) or [{"role": "system",
                                                                                  "content": RESPOND_NOW}]
        pending = conversation.pending(request.turn_id)
        heard = [{"role": "user", "content": request.text}] if response is None and request.text else []
        context = conversation.context(request.turn_id)
        if params.out_of_band:  # conversation "none": the conversation as context, nothing taken or kept
            return None, item_messages(context + pending) + heard or [{"role": "system", "content": RESPOND_NOW}]
        self.state.consume(pending, request.turn_id if response is None else None)
        memory = self._memory(request)
        messages = item_messages(pending if memory is not None else context + pending) + heard
        if not item_messages(pending) and not heard:
            messages.append({"role": "system", "content": RESPOND_NOW})
        return memory, messages

    def _options(self, request: TurnRequest, response: RealtimeResponse | None,
                 params: ResponseParams) -> dict[str, Any]:
        settings = self.state.settings
        model_settings: dict[str, Any] = {}
        cap = response.max_output_tokens if response is not None else settings.max_output_tokens
        if cap or request.max_tokens:
            model_settings["max_tokens"] = cap or request.max_tokens
        temperature = params.temperature if params.temperature is not None else settings.temperature
        if temperature is not None:
            model_settings["temperature"] = temperature
        context: dict[str, Any] = {"resource_id": request.resource}
        return {"tool_choice": params.tool_choice or settings.tool_choice, "context": context,
                "model_settings": model_settings or None}

    async def _actions(self, run: Any, turn_id: str | None, client_names: frozenset[str]) -> AsyncIterator[Any]:
        """The run's chunks as speech actions; client function calls and the finish noted for the gateway."""
        notes = self.state.notes.for_turn(turn_id)
        known = frozenset(self._base.workflows)
        async for chunk in run:
            payload = chunk.payload or {}
            if chunk.type == "tool-call-suspended" and payload.get("tool_name") in client_names:
                call_id = str(payload.get("tool_call_id"))
                if call_id not in self._waiting_calls:
                    self._waiting_calls[call_id] = chunk.run_id
                    while len(self._waiting_calls) > MAX_WAITING_CALLS:  # outputs never sent: forget the oldest
                        self._waiting_calls.pop(next(iter(self._waiting_calls)))
                    notes.function_calls.append({"call_id": call_id, "name": payload["tool_name"],
                                                 "arguments": json.dumps(payload.get("args") or {})})
                continue
            if chunk.type == "finish":
                notes.finish_reason = payload.get("finish_reason")
                notes.usage = dict(payload.get("usage") or {})
            for action in translate_agent_chunk(chunk.type, payload, chunk.run_id, question_for=self._question_for,
                                                schema_for=self._schema_for, known_workflows=known):
                yield action

    async def _resumed(self, stream: RealtimeStream, outputs: list[dict[str, Any]], turn_id: str | None,
                       client_names: frozenset[str]) -> AsyncIterator[Any]:
        """Resume the suspended run with each function output in turn, then read it to the end."""
        agent = self.agent
        for i, output in enumerate(outputs):
            run_id = self._waiting_calls.pop(output["call_id"])
            run = await agent.resume_stream({"output": output.get("output", "")}, run_id=run_id,
                                            tool_call_id=output["call_id"])
            stream.run = run
            if i < len(outputs) - 1 and self._waiting_calls.get(outputs[i + 1]["call_id"]) == run_id:
                await run.result()  # it suspends again at the next call, whose output is here too
                continue
            async for action in self._actions(run, turn_id, client_names):
                yield action

    async def decide_tool_call(self, approval: PendingApproval, *, approve: bool, reason: str | None,
                               request: TurnRequest) -> Any:
        self._answered_by_dialog(request)
        stream = await super().decide_tool_call(approval, approve=approve, reason=reason, request=request)
        self._keep(request.turn_id, stream)
        return stream

    async def resume_workflow(self, question: PendingWorkflow, answer: str, request: TurnRequest) -> Any:
        self._answered_by_dialog(request)
        stream = await super().resume_workflow(question, answer, request)
        self._keep(request.turn_id, stream)
        return stream

    def _answered_by_dialog(self, request: TurnRequest) -> None:
        """The caller's words answered a pending approval or workflow question: the response asked for (if any) is
        this one, and the items it had as input are taken."""
        state = self.state
        response = state.port_requests.popleft() if state.port_requests else None
        state.consume(state.conversation.pending(request.turn_id), request.turn_id if response is None else None)

    async def replace_heard(self, turn_id: str, heard_text: str) -> None:
        """A truncate after the reply ended: memory keeps exactly ``heard_text`` of it."""
        stream = self._streams.get(turn_id)
        if stream is not None:
            try:
                await stream.cancel(heard_text=heard_text or None)
            except Exception:
                log.exception("could not record what the caller heard")

    def _keep(self, turn_id: str | None, stream: Any) -> None:
        if turn_id is None:
            return
        self._streams[turn_id] = stream
        while len(self._streams) > MAX_STREAMS:
            self._streams.popitem(last=False)

    # --- the derived agent -------------------------------------------------------------------------------------

    async def _agent_with(self, tools: list[FunctionTool]) -> tuple[Agent, frozenset[str]]:
        key = tuple((t.name, t.description, json.dumps(t.parameters, sort_keys=True)) for t in tools)
        if key in self._agents:
            self._agents.move_to_end(key)
            return self._agents[key]
        base = self._base
        model = await base.get_model()  # shared: the derived agent never loads a model of its own

        async def instructions(ctx: Any) -> str:
            if self._instructions is not None:
                return self._instructions
            return await base.resolve_instructions(ctx=ctx)

        agent = Agent(name=base.name, id=base.id, description=base.description, instructions=instructions,
                      model=model, tools={**base.tools, **{t.name: client_tool(t) for t in tools}},
                      agents=base.agents, workflows=base.workflows, memory=base.memory, voice=base._voice,
                      default_options=base.default_options, model_registry=base.model_registry, storage=base.storage,
                      input_processors=base.input_processors, output_processors=base.output_processors,
                      max_parallel_tools=base.max_parallel_tools, prompt_budget_tokens=base.prompt_budget_tokens)
        self._agents[key] = (agent, frozenset(t.name for t in tools))
        while len(self._agents) > MAX_AGENTS:
            self._agents.popitem(last=False)
        return self._agents[key]

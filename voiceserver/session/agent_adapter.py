"""The :class:`~voiceserver.session.agent_port.AgentPort` of a Mastra-style :class:`voiceserver.agent.Agent`.

This is where the session's needs meet the agent library's public API: a turn is ``agent.stream`` (or
``agent.network`` when the agent's ``voice_mode`` is "network"), an approval is ``approve_tool_call`` /
``decline_tool_call`` (or their network versions), a workflow answer is shaped into the step's ``resume_schema`` with
structured output and resumes the run. Every chunk goes through the pure translators of agent_port, so the session
only ever sees speech actions.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from ..agent import Agent
from ..llm.base import ChatMessage, ChatModel, ChatRequest
from ..logs import get_logger
from ..stt.base import SpeechToText
from ..voice import CompositeVoice
from ..workflows import SchemaValidationError
from .agent_port import (
    AnswerRejected,
    NetworkTranslator,
    PendingApproval,
    PendingWorkflow,
    SpeakingVoice,
    SpeechAction,
    TurnRequest,
    WorkflowOutcome,
    translate_agent_chunk,
    workflow_event_actions,
    workflow_outcome_actions,
)
from .speech_text import approval_question, workflow_prompt

log = get_logger("SESSION")


class ActionStream:
    """A TurnStream over an agent or network stream (or a plain generator of actions), translated as it is read."""

    def __init__(self, actions: AsyncIterator[SpeechAction], run: Any = None, *, records: bool = False):
        self._actions = actions
        self._run = run  # the AgentStream / NetworkStream to cancel, when there is one
        self.records = records

    def __aiter__(self) -> AsyncIterator[SpeechAction]:
        return self._actions

    async def cancel(self, heard_text: str | None = None) -> None:
        with contextlib.suppress(RuntimeError):  # "already running": its consumer is being cancelled right now
            await self._actions.aclose()
        if self._run is not None:
            await self._run.cancel(heard_text=heard_text)


class AgentAdapter:
    """Answers a voice session with an :class:`~voiceserver.agent.Agent` (see the module notes)."""

    def __init__(self, agent: Agent, *, key: str | None = None):
        self.agent = agent
        self.name = key or agent.name

    # --- what the session reads -------------------------------------------------------------------------------

    def remembers(self, resource: str | None, thread: str | None) -> bool:
        return self.agent.memory is not None and bool(resource) and bool(thread)

    @property
    def has_workflows(self) -> bool:
        return bool(self.agent.workflows)

    def voice(self) -> SpeakingVoice | None:
        voice = self.agent.voice
        if not isinstance(voice, CompositeVoice):
            return None
        talker = voice.talker()
        return SpeakingVoice(talker, voice.speaker, voice.speed) if talker is not None else None

    def listener(self) -> SpeechToText | None:
        voice = self.agent.voice
        return voice.listener() if isinstance(voice, CompositeVoice) else None

    # --- turns ------------------------------------------------------------------------------------------------

    async def open_turn(self, request: TurnRequest) -> ActionStream:
        agent = self.agent
        memory = self._memory(request)
        if agent.voice_mode == "network" and memory is not None:
            # The agent routes each request over its agents, workflows and tools (agent networks need memory).
            run = agent.network(request.text, memory=memory, context={"resource_id": request.resource})
            return ActionStream(self._network_actions(run), run, records=True)
        context: dict[str, Any] = {"resource_id": request.resource}
        if request.session_id is not None:
            # A new call starts a new prompt window (and shows working memory as it is now), even in a thread
            # that spans several calls (a phone number's thread).
            context["conversation_id"] = request.session_id
        if request.on_workflow_event is not None:
            context["workflow_observer"] = _observer(request.on_workflow_event)
        settings = {"max_tokens": request.max_tokens} if request.max_tokens else None
        if memory is not None:
            run = agent.stream(request.text, memory=memory, context=context, model_settings=settings)
        else:
            run = agent.stream([*request.history, {"role": "user", "content": request.text}], context=context,
                               model_settings=settings)
        return ActionStream(self._agent_actions(run), run, records=memory is not None)

    async def decide_tool_call(self, approval: PendingApproval, *, approve: bool, reason: str | None,
                               request: TurnRequest) -> ActionStream:
        agent = self.agent
        log.info("tool call " + ("approved" if approve else "declined"),
                 fields={"tool": approval.tool_name, "run_id": approval.run_id})
        if approval.network:
            if approve:
                run = await agent.approve_network_tool_call(run_id=approval.run_id)
            else:
                run = await agent.decline_network_tool_call(run_id=approval.run_id,
                                                            reason=reason or "declined by the caller")
            return ActionStream(self._network_actions(run), run, records=True)
        if approve:
            run = await agent.approve_tool_call(run_id=approval.run_id, tool_call_id=approval.tool_call_id)
        else:
            run = await agent.decline_tool_call(run_id=approval.run_id, tool_call_id=approval.tool_call_id,
                                                reason=reason or "declined by the caller")
        return ActionStream(self._agent_actions(run), run, records=self.remembers(request.resource, request.thread))

    async def resume_workflow(self, question: PendingWorkflow, answer: str, request: TurnRequest) -> ActionStream:
        data = await shape_answer(await self.agent.get_model(), question.resume_schema, question.prompt, answer)
        if data is None:
            return ActionStream(_just(AnswerRejected()))
        if question.network_run_id is not None:
            try:
                run = await self.agent.resume_network(data, run_id=question.network_run_id)
            except Exception as exc:
                if getattr(exc, "code", "") != "invalid_resume_data":
                    raise  # anything but an answer that does not fit fails the turn as usual
                return ActionStream(_just(AnswerRejected()))
            return ActionStream(self._network_actions(run), run, records=True)
        return ActionStream(self._workflow_actions(question, data))

    async def cancel_workflow(self, question: PendingWorkflow) -> None:
        workflow = self._workflow(question.workflow_id)
        if workflow is not None:
            await (await workflow.create_run(run_id=question.run_id)).cancel()

    async def unfinished_workflows(self, resource: str) -> list[PendingWorkflow]:
        found = []
        for key, workflow in self.agent.workflows.items():
            try:
                runs = await workflow.list_runs(resource_id=resource, status="suspended", limit=1)
            except Exception:
                log.exception("could not list suspended workflow runs")
                continue
            if not runs:
                continue
            run = runs[0]
            prompt = workflow_prompt(run.suspend_payload)
            if prompt is None:
                continue
            step = list(run.suspended[0]) if run.suspended else []
            title = (workflow.description or key.replace("-", " ")).rstrip(".")
            found.append(PendingWorkflow(key, run.run_id, step, prompt, self._schema_for(key, step), offer=True,
                                         title=title))
        return found

    async def record_exchange(self, resource: str, thread: str, user_text: str | None, reply: str, *,
                              error_code: str | None = None) -> None:
        memory = self.agent.memory
        if memory is None:
            return
        metadata = {"error_code": error_code} if error_code else {}
        messages = [{"role": role, "content": content, "thread_id": thread, "resource_id": resource,
                     "metadata": metadata}
                    for role, content in (("user", user_text), ("assistant", reply)) if content]
        if messages:
            await memory.save_messages(messages)

    # --- translation --------------------------------------------------------------------------------------------

    async def _agent_actions(self, run: Any) -> AsyncIterator[SpeechAction]:
        known = frozenset(self.agent.workflows)
        async for chunk in run:
            for action in translate_agent_chunk(chunk.type, chunk.payload or {}, chunk.run_id,
                                                question_for=self._question_for, schema_for=self._schema_for,
                                                known_workflows=known):
                yield action

    async def _network_actions(self, run: Any) -> AsyncIterator[SpeechAction]:
        translator = NetworkTranslator(self._network_question_for, self._schema_for, self.agent.name)
        async for event in run:
            for action in translator.feed(event.type, event.payload or {}, event.run_id):
                yield action
        for action in translator.end():
            yield action

    async def _workflow_actions(self, question: PendingWorkflow, data: dict[str, Any]) -> AsyncIterator[SpeechAction]:
        workflow = self._workflow(question.workflow_id)
        if workflow is None:
            yield AnswerRejected()
            return
        run = await workflow.create_run(run_id=question.run_id)
        try:
            events = run.resume_stream(step=question.step or None, resume_data=data)
        except SchemaValidationError:
            yield AnswerRejected()
            return
        async for event in events:
            for action in workflow_event_actions(event, question.run_id):
                yield action
        result = await run.result()
        outcome = WorkflowOutcome(question.workflow_id, result.status, result.result, result.error,
                                  result.suspend_payload, [list(s) for s in result.suspended or []], question.run_id)
        for action in workflow_outcome_actions(outcome, self._schema_for):
            yield action

    # --- lookups ------------------------------------------------------------------------------------------------

    def _memory(self, request: TurnRequest) -> dict[str, str] | None:
        if not self.remembers(request.resource, request.thread):
            return None
        assert request.resource is not None and request.thread is not None
        return {"resource": request.resource, "thread": request.thread}

    def _workflow(self, key: str) -> Any:
        workflows = self.agent.workflows
        if key in workflows:
            return workflows[key]
        return next((w for w in workflows.values() if getattr(w, "id", None) == key), None)

    def _schema_for(self, workflow_id: str, step: list[str]) -> Any:
        workflow = self._workflow(workflow_id)
        if workflow is None or not step:
            return None
        found = workflow.find_step(step)
        return found.resume_schema if found is not None else None

    def _question_for(self, tool_name: str, args: dict[str, Any]) -> str:
        return approval_question(self.agent.tools.get(tool_name), tool_name, args)

    def _network_question_for(self, tool_name: str, args: dict[str, Any]) -> str:
        """In a network the tool may belong to a sub-agent (for its approval_prompt)."""
        tool = self.agent.tools.get(tool_name)
        if tool is None:
            tool = next((sub.tools[tool_name] for sub in self.agent.agents.values() if tool_name in sub.tools), None)
        return approval_question(tool, tool_name, args)


def adapt_agents(agents: dict[str, Any]) -> dict[str, Any]:
    """Wrap each :class:`Agent` in an AgentAdapter; anything else is taken as an AgentPort already."""
    return {key: AgentAdapter(agent, key=key) if isinstance(agent, Agent) else agent for key, agent in agents.items()}


async def shape_answer(model: ChatModel, schema: Any, question: str, answer: str) -> dict[str, Any] | None:
    """Turn the caller's free answer into JSON of ``schema`` (structured output); None when it does not fit.

    Without a schema the answer is passed as ``{"answer": text}``.
    """
    json_schema = _schema_of(schema)
    if json_schema is None:
        return {"answer": answer}
    request = ChatRequest(
        messages=[
            ChatMessage("system", "Extract the caller's answer to the question as JSON matching the schema. "
                                  "Use only what the caller said."),
            ChatMessage("user", f"Question: {question}\nCaller's answer: {answer}"),
        ],
        response_schema=json_schema, max_tokens=200, temperature=0.0)
    result = await model.complete(request)
    try:
        data = json.loads(result.text)
    except (json.JSONDecodeError, TypeError):
        return None
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            return schema.model_validate(data).model_dump(mode="json")
        except ValidationError:
            return None
    return data if isinstance(data, dict) else None


def _schema_of(schema: Any) -> dict[str, Any] | None:
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    if isinstance(schema, dict):
        return schema
    return None


def _observer(forward: Callable[[str, dict[str, Any]], None]) -> Callable[[str, Any, Any], None]:
    """The agent's ``workflow_observer`` context hook: forward every event of a workflow a tool runs."""

    def observe(key: str, workflow: Any, run: Any) -> None:
        run.watch(lambda event: forward(str(event.get("run_id", run.run_id)), event))

    return observe


async def _just(*actions: SpeechAction) -> AsyncIterator[SpeechAction]:
    for action in actions:
        yield action


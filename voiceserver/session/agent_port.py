"""The seam between a voice session and whatever answers it, and the one translator from run chunks to speech.

A session needs little from an answerer: open a turn for (resource, thread) and stream it, cancel with the text the
caller heard, decide a tool call waiting for approval, resume a workflow waiting for the caller, and the voice to
speak with. :class:`AgentPort` is that surface as a ``typing.Protocol``; :class:`voiceserver.session.agent_adapter.
AgentAdapter` implements it over a Mastra-style :class:`voiceserver.agent.Agent`, and an application may plug in its
own implementation (an external dialog manager, a rules engine...).

What a turn stream yields is a small vocabulary of :data:`SpeechAction` values. The translators below turn agent,
network and workflow chunks into those actions; they are pure (values in, values out) and unit-tested on values, so
the session never dispatches on chunk-type strings.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..stt.base import SpeechToText
from ..tts.base import TextToSpeech
from .speech_text import speakable_result, workflow_prompt

# --- what a session asks for ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One caller turn as the session hands it to the answerer."""

    text: str
    resource: str | None = None
    thread: str | None = None
    history: tuple[dict[str, str], ...] = ()  # the session's own history, for answerers without memory
    long_form: bool = False  # the caller asked for a long answer ("tell me a story")
    max_tokens: int | None = None  # generation cap for this reply
    # Progress of workflows a tool starts during the turn: (run_id, event) for the caller's client.
    on_workflow_event: Callable[[str, dict[str, Any]], None] | None = None
    turn_id: str | None = None  # the turn this answers (its events carry it), for answerers that report per turn
    session_id: str | None = None  # the call this turn belongs to (a thread may span several calls)


@dataclass(slots=True)
class PendingApproval:
    """A tool call waiting for the caller's yes or no (``network``: inside an agent-network run)."""

    run_id: str
    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    question: str
    network: bool = False
    asked: int = 1


@dataclass(slots=True)
class PendingWorkflow:
    """A workflow run waiting for the caller: a step's question, or an offer to continue an earlier run."""

    workflow_id: str
    run_id: str
    step: list[str]
    prompt: str
    resume_schema: Any = None
    network_run_id: str | None = None  # the workflow runs inside an agent-network run: resume that run
    offer: bool = False  # True: we asked "shall we continue?" and wait for yes/no
    title: str = ""  # how the workflow is named aloud in an offer
    asked: int = 1


@dataclass(frozen=True, slots=True)
class SpeakingVoice:
    """How an answerer speaks: the engine (a fallback chain is one engine), and the speaker and speed it asks for."""

    tts: TextToSpeech
    speaker: str | None = None
    speed: float | None = None


# --- what a turn stream yields ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SayText:
    """Model text as it streams (phrases are cut by the session)."""

    text: str


@dataclass(frozen=True, slots=True)
class SayLine:
    """Whole sentences composed by the server or a workflow step, spoken after what came before."""

    text: str


@dataclass(frozen=True, slots=True)
class AskApproval:
    """A tool call needs the caller's approval; the question is spoken and the turn waits for the answer."""

    approval: PendingApproval


@dataclass(frozen=True, slots=True)
class AskWorkflow:
    """A workflow asks the caller a question; ``hand_over``: the model's own follow-up is stopped (the workflow
    leads the conversation now)."""

    question: PendingWorkflow
    hand_over: bool = False


@dataclass(frozen=True, slots=True)
class AnswerRejected:
    """The caller's answer did not fit the workflow step; the question is asked again."""


@dataclass(frozen=True, slots=True)
class WorkflowProgress:
    """A workflow event for the caller's client (not spoken)."""

    run_id: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TurnStats:
    """Figures about the turn (prompt size, cache reuse, recall), for the metrics event and the turn log."""

    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class TurnFailed:
    """The answerer failed; the session reports the code (and apologises aloud)."""

    code: str
    message: str


SpeechAction = (SayText | SayLine | AskApproval | AskWorkflow | AnswerRejected | WorkflowProgress | TurnStats
                | TurnFailed)


@runtime_checkable
class TurnStream(Protocol):
    """A running reply: iterate its actions; cancel it with what the caller heard (memory keeps exactly that).
    ``records``: the answerer keeps this exchange in its memory itself (else the session records it)."""

    records: bool

    def __aiter__(self) -> AsyncIterator[SpeechAction]: ...

    async def cancel(self, heard_text: str | None = None) -> None: ...


@runtime_checkable
class AgentPort(Protocol):
    """What a voice session needs from whatever answers it."""

    name: str
    has_workflows: bool  # offer unfinished workflow runs when a known caller calls back

    def voice(self) -> SpeakingVoice | None:
        """The answerer's own voice, or None for the server's default."""
        ...

    def listener(self) -> SpeechToText | None:
        """The answerer's own speech-to-text, or None for the server's default."""
        ...

    def open_turn(self, request: TurnRequest) -> Awaitable[TurnStream]: ...

    def decide_tool_call(self, approval: PendingApproval, *, approve: bool, reason: str | None,
                         request: TurnRequest) -> Awaitable[TurnStream]: ...

    def resume_workflow(self, question: PendingWorkflow, answer: str, request: TurnRequest
                        ) -> Awaitable[TurnStream]:
        """Shape ``answer`` into the step's resume data and continue the run (yields AnswerRejected when the
        answer does not fit)."""
        ...

    def cancel_workflow(self, question: PendingWorkflow) -> Awaitable[None]: ...

    def unfinished_workflows(self, resource: str) -> Awaitable[list[PendingWorkflow]]:
        """Workflow runs of this caller waiting for an answer (offered when they call back)."""
        ...

    def remembers(self, resource: str | None, thread: str | None) -> bool:
        """True when the answerer keeps this conversation itself (memory); otherwise the session passes its own
        short history in :attr:`TurnRequest.history` and records exchanges itself."""
        ...

    def record_exchange(self, resource: str, thread: str, user_text: str | None, reply: str, *,
                        error_code: str | None = None) -> Awaitable[None]:
        """Keep a server-composed exchange (a re-asked question, an apology after ``error_code``) in memory."""
        ...


# --- the translators (pure) ---------------------------------------------------------------------------------------

QuestionFor = Callable[[str, dict[str, Any]], str]  # (tool name, args) -> the spoken approval question
SchemaFor = Callable[[str, list[str]], Any]  # (workflow id, step path) -> the step's resume_schema
WORKFLOW_EVENT = "workflow-execution-event-"


def usage_stats(usage: Any) -> TurnStats | None:
    """Prompt and cache figures from a chunk's ``usage`` dict (None when there are none)."""
    if not isinstance(usage, dict):
        return None
    values = {key: float(usage[key]) for key in ("prompt_tokens", "cached_tokens", "completion_tokens")
              if isinstance(usage.get(key), int | float) and not isinstance(usage.get(key), bool)}
    return TurnStats(values) if values else None


def context_stats(payload: dict[str, Any]) -> TurnStats:
    """The agent's ``context`` chunk (what went into the prompt) as turn figures."""
    names = {"prompt_tokens": "prompt_tokens_estimate", "budget": "prompt_budget",
             "history_messages": "history_messages", "recalled_messages": "recalled_messages",
             "dropped_history": "dropped_history", "memory_ms": "memory_ms", "prepare_ms": "prepare_ms"}
    return TurnStats({out: float(payload[key]) for key, out in names.items()
                      if isinstance(payload.get(key), int | float) and not isinstance(payload.get(key), bool)})


def suspended_question(result: Any, schema_for: SchemaFor) -> PendingWorkflow | None:
    """A workflow tool's result that came back suspended with a question for the caller, as a PendingWorkflow."""
    if not (isinstance(result, dict) and result.get("status") == "suspended" and result.get("run_id")):
        return None
    prompt = workflow_prompt(result.get("suspend_payload"))
    workflow_id = result.get("workflow")
    if prompt is None or not isinstance(workflow_id, str):
        return None
    step = [str(s) for s in result.get("step") or []]
    return PendingWorkflow(workflow_id, str(result["run_id"]), step, prompt, schema_for(workflow_id, step))


def translate_agent_chunk(chunk_type: str, payload: dict[str, Any], run_id: str | None, *,
                          question_for: QuestionFor, schema_for: SchemaFor,
                          known_workflows: frozenset[str]) -> list[SpeechAction]:
    """One agent stream chunk (``voiceserver.agent`` chunk types) as speech actions."""
    if chunk_type == "text-delta":
        text = payload.get("text")
        return [SayText(text)] if isinstance(text, str) and text else []
    if chunk_type == "tool-call-approval":
        name, args = str(payload.get("tool_name", "")), dict(payload.get("args") or {})
        return [AskApproval(PendingApproval(run_id or "", str(payload.get("tool_call_id", "")), name, args,
                                            question_for(name, args)))]
    if chunk_type == "tool-result":
        result = payload.get("result")
        if isinstance(result, dict) and result.get("workflow") not in known_workflows:
            return []
        question = suspended_question(result, schema_for)
        return [AskWorkflow(question, hand_over=True)] if question is not None else []
    if chunk_type == "context":
        return [context_stats(payload)]
    if chunk_type in ("finish", "prompt-read"):
        stats = usage_stats(payload.get("usage"))
        return [stats] if stats is not None else []
    if chunk_type == "error":
        error = payload.get("error")
        code = getattr(error, "code", None) or payload.get("code") or "agent_error"
        message = getattr(error, "message", None) or payload.get("message") or str(error)
        return [TurnFailed(str(code), str(message))]
    return []


@dataclass
class NetworkTranslator:
    """Agent-network events as speech actions. Stateful only in what it remembers for the end of the stream: when
    nothing was spoken and nothing waits for the caller, the network's final result is spoken."""

    question_for: QuestionFor
    schema_for: SchemaFor
    network_name: str = "task"
    spoke: bool = False
    waiting: bool = False
    final: Any = None
    finished: bool = False

    def feed(self, chunk_type: str, payload: dict[str, Any], run_id: str | None) -> list[SpeechAction]:
        if chunk_type == "agent-execution-event-text-delta":
            text = payload.get("text")
            if isinstance(text, str) and text:
                self.spoke = True
                return [SayText(text)]
            return []
        if chunk_type.startswith(WORKFLOW_EVENT):
            inner = {"type": chunk_type[len(WORKFLOW_EVENT):], "workflow_id": payload.get("workflow_id"),
                     "payload": payload}
            actions: list[SpeechAction] = [WorkflowProgress(str(payload.get("workflow_run_id") or run_id or ""),
                                                            inner)]
            if inner["type"] == "say" and isinstance(payload.get("text"), str) and payload["text"].strip():
                self.spoke = True
                actions.append(SayLine(payload["text"]))
            return actions
        if chunk_type in ("tool-execution-approval", "agent-execution-approval"):
            name, args = str(payload.get("tool_name", "")), dict(payload.get("args") or {})
            self.waiting = True
            return [AskApproval(PendingApproval(run_id or "", str(payload.get("tool_call_id", "")), name, args,
                                                self.question_for(name, args), network=True))]
        if chunk_type.endswith("-execution-suspended"):
            prompt = workflow_prompt(payload.get("suspend_payload")) or "What should I do next?"
            workflow_id = str(payload.get("workflow_id", ""))
            step = [str(s) for s in list((payload.get("suspended") or [[]])[0])]
            self.waiting = True
            return [AskWorkflow(PendingWorkflow(workflow_id, str(payload.get("workflow_run_id", "")), step, prompt,
                                                self.schema_for(workflow_id, step), network_run_id=run_id))]
        if chunk_type == "network-execution-event-finish":
            self.final, self.finished = payload.get("result"), True
            return []
        if chunk_type == "error":
            if payload.get("code") == "invalid_resume_data":
                return [AnswerRejected()]
            return [TurnFailed(str(payload.get("code", "network_failed")), str(payload.get("message", "network run")))]
        return []

    def end(self) -> list[SpeechAction]:
        if not self.spoke and not self.waiting and self.finished and self.final is not None:
            return [SayLine(speakable_result(self.network_name, self.final))]
        return []


@dataclass
class WorkflowOutcome:
    """What the caller hears when a resumed workflow run stops: its result, its next question, or its failure."""

    workflow_id: str
    status: str
    result: Any = None
    error: Any = None
    suspend_payload: Any = None
    suspended: list[list[str]] = field(default_factory=list)
    run_id: str = ""


def workflow_outcome_actions(outcome: WorkflowOutcome, schema_for: SchemaFor) -> list[SpeechAction]:
    """The speech for a resumed workflow's end (pure)."""
    name = outcome.workflow_id
    if outcome.status == "suspended":
        prompt = workflow_prompt(outcome.suspend_payload)
        if prompt:
            step = list(outcome.suspended[0]) if outcome.suspended else []
            return [AskWorkflow(PendingWorkflow(name, outcome.run_id, step, prompt, schema_for(name, step)))]
        return [SayLine("That is saved; it is waiting for something else before it can go on.")]
    if outcome.status == "success":
        return [SayLine(speakable_result(name, outcome.result))]
    detail = outcome.error.get("message") if isinstance(outcome.error, dict) else None
    return [SayLine(f"Sorry, the {name.replace('-', ' ')} could not be completed" + (f": {detail}" if detail else "."))]


def workflow_event_actions(event: dict[str, Any], run_id: str) -> list[SpeechAction]:
    """One event of a resumed workflow run: forwarded to the client, and a step's ``say`` spoken."""
    actions: list[SpeechAction] = [WorkflowProgress(str(event.get("run_id", run_id)), event)]
    if event.get("type") == "say":
        text = (event.get("payload") or {}).get("text")
        if isinstance(text, str) and text.strip():
            actions.append(SayLine(text))
    return actions


def describe(value: Any) -> str:
    """Short JSON for logs."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)[:200]
    except (TypeError, ValueError):
        return repr(value)[:200]

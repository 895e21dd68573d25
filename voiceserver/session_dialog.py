"""The spoken-dialog half of a Session: tool approval by voice, and workflows that ask the caller questions.

Mixed into :class:`voiceserver.session.Session` (it uses the session's outbox, agents, and its ``_speak_agent`` /
``_speak_only`` turn helpers). What the next utterance means is decided here: an answer to a pending approval, an
answer to a workflow's question (shaped into the step's resume_schema with structured output, asked again when it
does not fit), or an answer to "shall we continue?" when a caller comes back to an unfinished workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from .dialog import (
    MAX_REASKS,
    PendingApproval,
    PendingWorkflow,
    approval_question,
    classify_yes_no,
    shape_answer,
    speakable_result,
    workflow_prompt,
)
from .engines import ProviderError
from .events import ResponseDone, ResponseStarted, ToolApprovalRequested, WorkflowEvent
from .ids import new_id
from .logs import get_logger, log_context
from .reply import Reply, Turn

log = get_logger("SESSION")
WORKFLOW_EVENT = "workflow-execution-event-"


class SpokenDialog:
    """Approval and workflow dialog for a Session (see the module notes)."""

    pending_approval: PendingApproval | None
    pending_workflow: PendingWorkflow | None

    # --- tool approval by voice --------------------------------------------------------------------------------

    async def _ask_approval(self, turn: Turn, reply: Reply, agent: Any, chunk: Any) -> None:
        payload = chunk.payload
        name, args = payload.get("tool_name", ""), dict(payload.get("args") or {})
        tool = getattr(agent, "tools", {}).get(name)
        question = approval_question(tool, name, args)
        self.pending_approval = PendingApproval(agent, chunk.run_id, payload["tool_call_id"], name, args, question)
        await self.outbox.put(ToolApprovalRequested(turn.id, payload["tool_call_id"], name, args, chunk.run_id))
        await reply.say(question)

    async def _answer_approval(self, turn: Turn, text: str) -> bool:
        pending = self.pending_approval
        verdict = classify_yes_no(text)
        if verdict is None and pending.asked <= MAX_REASKS:
            pending.asked += 1
            await self._speak_only(turn, f"Sorry, I need a yes or a no. {pending.question}", text)
            return True
        reason = None if verdict == "yes" else ("the caller said no" if verdict == "no" else "no clear answer")
        await self._resolve_approval(turn, approve=verdict == "yes", user_text=text, reason=reason)
        return True

    async def _resolve_approval(self, turn: Turn, *, approve: bool, user_text: str | None,
                                reason: str | None) -> None:
        pending, self.pending_approval = self.pending_approval, None
        if pending is None:
            return
        agent = pending.agent
        with log_context(run_id=pending.run_id):
            log.info("tool call " + ("approved" if approve else "declined"), fields={"tool": pending.tool_name})

        if pending.network:
            async def open_network() -> Any:
                if approve:
                    return await agent.approve_network_tool_call(run_id=pending.run_id)
                return await agent.decline_network_tool_call(run_id=pending.run_id,
                                                             reason=reason or "declined by the caller")

            await self._speak_network(turn, agent, open_network, user_text=user_text)
            return

        async def open_stream() -> Any:
            if approve:
                return await agent.approve_tool_call(run_id=pending.run_id, tool_call_id=pending.tool_call_id)
            return await agent.decline_tool_call(run_id=pending.run_id, tool_call_id=pending.tool_call_id,
                                                 reason=reason or "declined by the caller")

        await self._speak_agent(turn, agent, open_stream, user_text=user_text)

    # --- agent networks by voice -------------------------------------------------------------------------------

    async def _speak_network(self, turn: Turn, agent: Any, open_stream: Any, user_text: str | None) -> None:
        """Run an agent-network stream and speak it: sub-agents' text as it streams, workflow events to the client,
        approvals and workflow questions asked aloud, and the network's final result when nothing else was said."""
        turn.responding = True
        await self.outbox.put(ResponseStarted(turn.id))
        started = time.perf_counter()
        turn.stream = await open_stream()
        reply = self._reply(turn)
        spoke, final, waiting = False, None, False
        try:
            async for event in turn.stream:
                kind, payload = event.type, event.payload or {}
                if kind == "agent-execution-event-text-delta" and payload.get("text"):
                    if "llm_first_token_ms" not in turn.metrics:
                        turn.metrics["llm_first_token_ms"] = (time.perf_counter() - started) * 1000
                    await reply.delta(payload["text"])
                    spoke = True
                elif kind.startswith(WORKFLOW_EVENT):
                    inner = {"type": kind[len(WORKFLOW_EVENT):], "workflow_id": payload.get("workflow_id"),
                             "payload": payload}
                    await self.outbox.put(WorkflowEvent(payload.get("workflow_run_id") or event.run_id, inner,
                                                        turn.id))
                    if inner["type"] == "say" and payload.get("text"):
                        await reply.say(str(payload["text"]))
                        spoke = True
                elif kind in ("tool-execution-approval", "agent-execution-approval"):
                    name, args = payload.get("tool_name", ""), dict(payload.get("args") or {})
                    question = approval_question(_find_tool(agent, name), name, args)
                    self.pending_approval = PendingApproval(agent, event.run_id, payload.get("tool_call_id", ""),
                                                            name, args, question, network=True)
                    await self.outbox.put(ToolApprovalRequested(turn.id, payload.get("tool_call_id", ""), name,
                                                                args, event.run_id))
                    await reply.say(question)
                    waiting = True
                elif kind.endswith("-execution-suspended"):
                    prompt = workflow_prompt(payload.get("suspend_payload")) or "What should I do next?"
                    workflow = (getattr(agent, "workflows", None) or {}).get(payload.get("workflow_id", ""))
                    step = list((payload.get("suspended") or [[]])[0])
                    self.pending_workflow = PendingWorkflow(workflow, payload.get("workflow_run_id", ""), step,
                                                            prompt, _resume_schema(workflow, step),
                                                            network_run_id=event.run_id)
                    await reply.say(prompt)
                    waiting = True
                elif kind == "network-execution-event-finish":
                    final = payload.get("result")
                elif kind == "error":
                    raise ProviderError(payload.get("code", "network_failed"), payload.get("message", "network run"))
            if not spoke and not waiting and final is not None:
                await reply.say(speakable_result(getattr(agent, "name", "task"), final))
            await reply.finish()
        finally:
            await reply.close()
        await self.outbox.put(ResponseDone(turn.id, turn.reply, interrupted=False))
        await self._emit_metrics(turn)

    # --- workflows driven by voice -----------------------------------------------------------------------------

    def _observe_workflow(self, key: str, workflow: Any, run: Any) -> None:
        """Forward a workflow's events to the client while an agent's tool runs it."""
        turn_id = self._turn.id if self._turn is not None else None

        def forward(event: dict[str, Any]) -> None:
            self.outbox.put_nowait(WorkflowEvent(event.get("run_id", run.run_id), event, turn_id), force=True)

        run.watch(forward)

    async def _workflow_took_over(self, turn: Turn, reply: Reply, agent: Any, payload: dict[str, Any]) -> bool:
        """A workflow tool came back suspended with a question for the caller: ask it, and wait for the answer."""
        result = payload.get("result")
        if not (isinstance(result, dict) and result.get("status") == "suspended" and result.get("run_id")):
            return False
        workflow = (getattr(agent, "workflows", None) or {}).get(result.get("workflow"))
        prompt = workflow_prompt(result.get("suspend_payload"))
        if workflow is None or prompt is None:
            return False
        step = list(result.get("step") or [])
        self.pending_workflow = PendingWorkflow(workflow, result["run_id"], step, prompt,
                                                _resume_schema(workflow, step))
        await reply.say(prompt)
        return True

    async def _answer_workflow(self, turn: Turn, text: str) -> bool:
        pending = self.pending_workflow
        if pending.offer:
            verdict = classify_yes_no(text)
            if verdict == "yes":
                pending.offer = False
                await self._speak_only(turn, pending.prompt, text)
                return True
            self.pending_workflow = None
            if verdict == "no":
                with contextlib.suppress(Exception):
                    await (await pending.workflow.create_run(run_id=pending.run_id)).cancel()
                await self._speak_only(turn, "Okay, I have cancelled it.", text)
                return True
            return False  # a new request instead: the run stays suspended for another time
        model = await self.deps.agents[self.agent_name].get_model()
        data = await shape_answer(model, pending.resume_schema, pending.prompt, text)
        if data is None:
            if pending.asked > MAX_REASKS:
                self.pending_workflow = None
                await self._speak_only(turn, "Sorry, I could not understand. Let's leave that for now.", text)
                return True
            pending.asked += 1
            await self._speak_only(turn, f"Sorry, I didn't get that. {pending.prompt}", text)
            return True
        await self._resume_workflow(turn, pending, data, text)
        return True

    async def _resume_workflow(self, turn: Turn, pending: PendingWorkflow, data: dict[str, Any], text: str) -> None:
        from .workflows import SchemaValidationError

        if pending.network_run_id is not None:
            agent = self.deps.agents[self.agent_name]
            self.pending_workflow = None
            try:
                await self._speak_network(turn, agent, lambda: agent.resume_network(
                    data, run_id=pending.network_run_id), user_text=text)
            except Exception as exc:
                if getattr(exc, "code", "") != "invalid_resume_data":
                    raise  # anything but an answer that does not fit fails the turn as usual
                pending.asked += 1
                self.pending_workflow = pending
                await self._speak_only(turn, f"Sorry, I didn't get that. {pending.prompt}", text)
            return

        self.pending_workflow = None
        turn.responding = True
        await self.outbox.put(ResponseStarted(turn.id))
        reply = self._reply(turn)
        try:
            run = await pending.workflow.create_run(run_id=pending.run_id)
            try:
                events = run.resume_stream(step=pending.step or None, resume_data=data)
            except SchemaValidationError:
                pending.asked += 1
                self.pending_workflow = pending
                await reply.say(f"Sorry, I didn't get that. {pending.prompt}")
                events = None
            if events is not None:
                async for event in events:
                    await self.outbox.put(WorkflowEvent(event.get("run_id", pending.run_id), event, turn.id))
                    if event.get("type") == "say":
                        await reply.say(str((event.get("payload") or {}).get("text", "")))
                result = await run.result()
                await reply.say(self._after_workflow(pending, result))
            await reply.finish()
        finally:
            await reply.close()
        await self._record_exchange(text, turn.reply)
        await self.outbox.put(ResponseDone(turn.id, turn.reply, interrupted=False))
        await self._emit_metrics(turn)

    def _after_workflow(self, pending: PendingWorkflow, result: Any) -> str:
        name = getattr(pending.workflow, "id", "workflow")
        if result.status == "suspended":
            prompt = workflow_prompt(result.suspend_payload)
            if prompt:
                step = list(result.suspended[0]) if result.suspended else []
                self.pending_workflow = PendingWorkflow(pending.workflow, pending.run_id, step, prompt,
                                                        _resume_schema(pending.workflow, step))
                return prompt
            return "That is saved; it is waiting for something else before it can go on."
        if result.status == "success":
            return speakable_result(name, result.result)
        detail = (result.error or {}).get("message") if isinstance(result.error, dict) else None
        return f"Sorry, the {name.replace('-', ' ')} could not be completed" + (f": {detail}" if detail else ".")

    async def _offer_unfinished_workflows(self) -> None:
        """A caller who hung up mid-workflow is offered to continue it when they call back."""
        resource = self.config.resource
        agent = self.deps.agents.get(self.agent_name)
        if not resource or agent is None:
            return
        for key, workflow in (getattr(agent, "workflows", None) or {}).items():
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
            self.pending_workflow = PendingWorkflow(workflow, run.run_id, step, prompt,
                                                    _resume_schema(workflow, step), offer=True)
            name = (getattr(workflow, "description", "") or key.replace("-", " ")).rstrip(".")
            offer = f"Welcome back. We did not finish this: {name}. Would you like to continue?"
            turn = Turn(id=new_id("turn"), text="", ended_at=time.perf_counter())
            self._turn = turn
            turn.task = asyncio.current_task()
            try:
                await self._speak_only(turn, offer, None)
            finally:
                turn.done = True
            return


def _resume_schema(workflow: Any, step: list[str]) -> Any:
    """The resume_schema of the step at ``step`` (a path of ids), if the workflow can find it."""
    finder = getattr(workflow, "find_step", None)
    found = finder(step) if callable(finder) and step else None
    return getattr(found, "resume_schema", None)


def _find_tool(agent: Any, name: str) -> Any:
    """The tool of that name on the agent or one of its sub-agents (for its approval_prompt)."""
    tool = (getattr(agent, "tools", None) or {}).get(name)
    if tool is not None:
        return tool
    for sub in (getattr(agent, "agents", None) or {}).values():
        tool = (getattr(sub, "tools", None) or {}).get(name)
        if tool is not None:
            return tool
    return None

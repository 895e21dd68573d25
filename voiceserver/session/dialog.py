"""The spoken dialog of a session: what the caller's next words mean while something waits for them.

A tool call may wait for the caller's approval (answered by a spoken yes or no, a ``tool.approve`` /
``tool.decline`` message, or a phone key: 1 yes, 2 no); a workflow may wait for the answer to its question (shaped
into the step's resume schema by the answerer, asked again when it does not fit); a caller who comes back may be
offered to continue an unfinished workflow. One thing waits at a time. Composed into the session (it holds its own
state and speaks through the session's reply envelope), it knows nothing of sockets or chunk types.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from ..logs import get_logger
from .agent_port import AskApproval, AskWorkflow, PendingApproval, PendingWorkflow
from .events import ToolApprovalRequested, ToolDecision
from .speech_text import MAX_REASKS, classify_yes_no, keypad_question, keypad_yes_no, wants_digits

if TYPE_CHECKING:
    from .context import SessionContext
    from .reply import Responder
    from .turn import Turn

log = get_logger("SESSION")


class SpokenDialog:
    """Pending approvals and workflow questions of one session (see the module notes)."""

    def __init__(self, ctx: SessionContext, responder: Responder):
        self.ctx = ctx
        self.responder = responder
        self.pending_approval: PendingApproval | None = None
        self.pending_workflow: PendingWorkflow | None = None
        self._asking: PendingWorkflow | None = None  # the question whose answer is being tried right now

    # --- questions a stream asks (QuestionHost) -----------------------------------------------------------------

    def hold_approval(self, action: AskApproval, turn: Turn) -> str:
        """A tool call waits for the caller: tell the client, and return the question to speak."""
        approval = action.approval
        self.pending_approval = approval
        self.ctx.emit(ToolApprovalRequested(turn.id, approval.tool_call_id, approval.tool_name, approval.args,
                                            approval.run_id))
        return keypad_question(approval.question) if self.ctx.config.keypad else approval.question

    def hold_workflow(self, action: AskWorkflow) -> str:
        """A workflow waits for the caller's answer; return its question."""
        self.pending_workflow = action.question
        return action.question.prompt

    def rejected(self) -> str:
        """The last answer did not fit the workflow step: ask again (a few times), or leave it for later."""
        question, self._asking = self._asking, None
        if question is None or question.asked > MAX_REASKS:
            self.pending_workflow = None
            return "Sorry, I could not understand. Let's leave that for now."
        question.asked += 1
        self.pending_workflow = question
        return f"Sorry, I didn't get that. {question.prompt}"

    # --- what the caller's words mean ---------------------------------------------------------------------------

    def waits_for(self, tool_call_id: str) -> bool:
        return self.pending_approval is not None and self.pending_approval.tool_call_id == tool_call_id

    async def answer(self, turn: Turn, text: str) -> bool:
        """True when ``text`` answered something that was waiting (and the reply was spoken)."""
        if self.pending_approval is not None:
            await self._answer_approval(turn, text)
            return True
        if self.pending_workflow is not None:
            return await self._answer_workflow(turn, text)
        return False

    async def decide(self, turn: Turn, decision: ToolDecision) -> None:
        """A ``tool.approve`` / ``tool.decline`` message for the pending approval."""
        await self._decide(turn, approve=decision.approve, reason=decision.reason, user_text=None)

    async def keypad(self, turn: Turn, digits: str) -> bool:
        """Phone keys: they answer a pending approval (1 yes, 2 no), a workflow question that wants digits, or an
        offer to continue. False when nothing waits for them (the agent then hears that keys were pressed)."""
        if self.pending_approval is not None:
            verdict = keypad_yes_no(digits[:1])
            if verdict is None:
                await self.responder.say(turn, "Please press 1 for yes or 2 for no.", user_text=None)
            else:
                await self._decide(turn, approve=verdict == "yes", reason=None if verdict == "yes"
                                   else "the caller pressed 2", user_text=None)
            return True
        question = self.pending_workflow
        if question is None:
            return False
        if question.offer:
            verdict = keypad_yes_no(digits[:1])
            if verdict is None:
                return False
            return await self._answer_workflow(turn, verdict)
        if wants_digits(question.resume_schema):
            return await self._answer_workflow(turn, digits)
        return False

    async def offer_unfinished(self) -> str | None:
        """For a caller who comes back: the offer to continue their newest unfinished workflow, if any."""
        ctx = self.ctx
        if not ctx.config.resource or not ctx.port.has_workflows:
            return None
        try:
            questions = await ctx.port.unfinished_workflows(ctx.config.resource)
        except Exception:
            log.exception("could not look for unfinished workflows")
            return None
        if not questions:
            return None
        self.pending_workflow = questions[0]
        return f"Welcome back. We did not finish this: {questions[0].title}. Would you like to continue?"

    # --- internals ----------------------------------------------------------------------------------------------

    async def _answer_approval(self, turn: Turn, text: str) -> None:
        pending = self.pending_approval
        assert pending is not None
        verdict = classify_yes_no(text)
        if verdict is None and pending.asked <= MAX_REASKS:
            pending.asked += 1
            await self.responder.say(turn, f"Sorry, I need a yes or a no. {pending.question}", user_text=text)
            return
        reason = None if verdict == "yes" else ("the caller said no" if verdict == "no" else "no clear answer")
        await self._decide(turn, approve=verdict == "yes", reason=reason, user_text=text)

    async def _decide(self, turn: Turn, *, approve: bool, reason: str | None, user_text: str | None) -> None:
        pending, self.pending_approval = self.pending_approval, None
        if pending is None:
            return
        request = self.ctx.request(user_text or "", turn_id=turn.id)
        await self.responder.play(turn, lambda: self.ctx.port.decide_tool_call(pending, approve=approve,
                                                                               reason=reason, request=request),
                                  self, user_text=user_text)

    async def _answer_workflow(self, turn: Turn, text: str) -> bool:
        question = self.pending_workflow
        assert question is not None
        if question.offer:
            verdict = classify_yes_no(text)
            if verdict == "yes":
                question.offer = False
                await self.responder.say(turn, question.prompt, user_text=text)
                return True
            self.pending_workflow = None
            if verdict == "no":
                with contextlib.suppress(Exception):
                    await self.ctx.port.cancel_workflow(question)
                await self.responder.say(turn, "Okay, I have cancelled it.", user_text=text)
                return True
            return False  # a new request instead: the run stays suspended for another time
        self.pending_workflow, self._asking = None, question
        request = self.ctx.request(text, turn_id=turn.id)
        await self.responder.play(turn, lambda: self.ctx.port.resume_workflow(question, text, request), self,
                                  user_text=text)
        self._asking = None
        return True

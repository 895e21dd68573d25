"""Claims on suspended runs across processes (`voiceserver serve --app claims_app:app`, or run as a script).

A workflow ``pay`` (step ``ask`` waits for ``{"approved": true}``, then step ``pay`` runs its side effect) and an agent
``Cashier`` whose tool ``pay`` needs approval. Each side effect appends one line ``"<what> <pid>"`` to the file
CLAIMS_APP_MARKS (so a test counts how often it ran, in any process) and then takes CLAIMS_APP_HOLD_S seconds.
Storage: LanceDB from the settings (LANCEDB_URI, VOICESERVER_LANCEDB_STORAGE_OPTIONS, VOICESERVER_STORAGE__*).

    python claims_app.py suspend                    -> prints the suspended agent run's id
    python claims_app.py approve <run_id> <at>      -> approves it at wall-clock time <at> (seconds), or once the
                                                       file <at> (a path) exists; prints {"ok", ...}
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from voiceserver.agent import Agent, create_tool
from voiceserver.memory import LanceDBStore
from voiceserver.settings import load_settings
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.voice_app import VoiceApp
from voiceserver.workflows import create_step, create_workflow


def mark(what: str) -> None:
    with open(os.environ["CLAIMS_APP_MARKS"], "a") as marks:
        marks.write(f"{what} {os.getpid()}\n")
        marks.flush()
        os.fsync(marks.fileno())


async def side_effect(what: str) -> None:
    mark(what)
    await asyncio.sleep(float(os.environ.get("CLAIMS_APP_HOLD_S", "0")))


class Payment(BaseModel):
    amount: int


class Approval(BaseModel):
    approved: bool


def build() -> VoiceApp:
    store = LanceDBStore.from_settings(load_settings())

    async def ask(ctx):
        if ctx.resume_data is None:
            ctx.suspend({"prompt": f"Pay {ctx.input_data.amount}?"})
        return {"amount": ctx.input_data.amount}

    async def pay(ctx):
        await side_effect("workflow-pay")
        return {"amount": ctx.input_data.amount}

    workflow = (create_workflow(id="pay", input_schema=Payment, output_schema=Payment, storage=store)
                .then(create_step(id="ask", input_schema=Payment, output_schema=Payment, resume_schema=Approval,
                                  execute=ask))
                .then(create_step(id="pay", input_schema=Payment, output_schema=Payment, execute=pay))
                .commit())

    async def pay_tool(input: Payment, ctx) -> dict:
        await side_effect("agent-pay")
        return {"paid": input.amount, "pid": os.getpid()}

    def respond(request):
        return "Paid." if request.messages[-1].role == "tool" else Reply(tool_calls=[("pay", {"amount": 5})])

    agent = Agent(name="Cashier", instructions="Take payments.", model=ScriptedChatModel([Reply(respond=respond)]),
                  tools={"pay": create_tool(id="pay", description="Pay.", input_schema=Payment, execute=pay_tool,
                                            require_approval=True)}, storage=store)
    return VoiceApp(agents={"Cashier": agent}, workflows={"pay": workflow}, storage=store)


def app() -> VoiceApp:
    return build()


async def wait_for_moment(moment: str) -> None:
    """Wait until wall-clock time ``moment`` (seconds), or until the file ``moment`` (a path) exists."""
    if moment.startswith("/"):
        print(json.dumps({"ready": True}), flush=True)  # the test waits for this line before it says go
        while not Path(moment).exists():
            await asyncio.sleep(0.02)
        return
    await asyncio.sleep(max(0.0, float(moment) - time.time()))


async def main(argv: list[str]) -> None:
    voice_app = build()
    agent = voice_app.get_agent("Cashier")
    store = agent.storage
    try:
        if argv[0] == "suspend":
            result = await agent.generate("pay 5")
            assert result.finish_reason == "suspended", result.finish_reason
            print(json.dumps({"run_id": result.run_id}), flush=True)
        elif argv[0] == "approve":
            await store.open()
            await wait_for_moment(argv[2])
            try:
                stream = await agent.approve_tool_call(run_id=argv[1])
                final = await stream.result()
                print(json.dumps({"ok": True, "text": final.text, "pid": os.getpid()}), flush=True)
            except Exception as exc:  # noqa: BLE001 - reported to the test
                print(json.dumps({"ok": False, "code": getattr(exc, "code", type(exc).__name__),
                                  "message": str(exc)}), flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

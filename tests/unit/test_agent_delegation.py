"""Sub-agents and workflows offered to the model as tools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from voiceserver.agent import Agent
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel


async def test_sub_agent_is_a_tool_and_its_answer_goes_back_to_the_supervisor():
    researcher_model = ScriptedChatModel(["Paris is the capital of France."])
    researcher = Agent(name="Researcher", description="Finds facts.", instructions="Research.",
                       model=researcher_model)
    model = ScriptedChatModel([Reply(tool_calls=[("agent-researcher", {"prompt": "Capital of France?"})]),
                               "It is Paris."])
    supervisor = Agent(name="Boss", model=model, agents={"researcher": researcher})
    result = await supervisor.generate("What is the capital of France?")
    assert result.text == "It is Paris."
    assert result.tool_results[0].result == {"text": "Paris is the capital of France."}
    spec = model.requests[0].tools[0]
    assert spec.name == "agent-researcher" and "Finds facts." in spec.description
    assert spec.parameters["required"] == ["prompt"]
    assert [(m.role, m.content) for m in researcher_model.requests[0].messages] == [
        ("system", "Research."), ("user", "Capital of France?")]


class BookingIn(BaseModel):
    restaurant: str
    people: int


@dataclass
class WorkflowResult:
    status: str
    result: Any = None
    error: str | None = None


class FakeWorkflow:
    """Duck-typed like voiceserver.workflows: input_schema, create_run(), run.start(input_data=...)."""

    def __init__(self, status: str = "success"):
        self.id = "booking"
        self.description = "Books a table end to end."
        self.input_schema = BookingIn
        self.status = status
        self.started: list = []

    async def create_run(self):
        workflow = self

        class Run:
            run_id = "wf_run_1"

            async def start(self, input_data):
                workflow.started.append(input_data)
                if workflow.status == "success":
                    return WorkflowResult("success", {"reference": "BK9"})
                return WorkflowResult(workflow.status, error="kitchen closed")

        return Run()


async def test_workflow_is_offered_as_a_tool_with_its_input_schema():
    workflow = FakeWorkflow()
    model = ScriptedChatModel([Reply(tool_calls=[("workflow-booking", {"restaurant": "Luigi", "people": "2"})]),
                               "Booked BK9."])
    agent = Agent(name="A", model=model, workflows={"booking": workflow, "notes": object()})
    result = await agent.generate("Book Luigi's for two")
    assert workflow.started == [{"restaurant": "Luigi", "people": 2}]
    assert result.tool_results[0].result == {"reference": "BK9"}
    assert agent.list_tools() == ["workflow-booking"]  # the object without create_run is stored, not offered
    assert "notes" in agent.workflows
    assert model.requests[0].tools[0].parameters["required"] == ["restaurant", "people"]


async def test_a_failed_workflow_is_a_tool_error():
    model = ScriptedChatModel([Reply(tool_calls=[("workflow-booking", {"restaurant": "L", "people": 2})]), "Sorry."])
    agent = Agent(name="A", model=model, workflows={"booking": FakeWorkflow(status="failed")})
    result = await agent.generate("Book")
    assert result.tool_results[0].is_error and "kitchen closed" in result.tool_results[0].result


async def test_with_the_real_workflow_engine_both_ways():
    from voiceserver.workflows import create_step, create_workflow

    class Topic(BaseModel):
        topic: str

    class Summary(BaseModel):
        summary: str

    async def summarise(ctx):
        return {"summary": f"about {ctx.input_data.topic}"}

    workflow = create_workflow(id="summarise", description="Summarises a topic.", input_schema=Topic,
                               output_schema=Summary).then(
        create_step(id="s1", input_schema=Topic, output_schema=Summary, execute=summarise)).commit()
    model = ScriptedChatModel([Reply(tool_calls=[("workflow-summarise", {"topic": "tides"})]), "Done."])
    agent = Agent(name="A", model=model, workflows={"summarise": workflow})
    result = await agent.generate("Summarise tides")
    assert result.tool_results[0].result == {"summary": "about tides"}

    # The other direction: a workflow step made from an agent and one made from a tool.
    from voiceserver.agent import create_tool

    class Shout(BaseModel):
        text: str

    shout = create_tool(id="shout", description="Upper-cases.", input_schema=Shout,
                        execute=lambda input: {"text": input.text.upper()})
    writer = Agent(name="Writer", model=ScriptedChatModel(["a poem"]))
    flow = create_workflow(id="poem", input_schema=Shout).then(create_step(shout)).map(
        lambda ctx: {"prompt": ctx.input_data["text"]}).then(create_step(writer)).commit()
    run = await flow.create_run()
    outcome = await run.start(input_data={"text": "sea"})
    assert outcome.status == "success", outcome
    assert outcome.result == {"text": "a poem"}
    assert writer.model.requests[0].messages[-1].content == "SEA"

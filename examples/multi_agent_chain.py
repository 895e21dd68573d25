"""A multi-agent chain: research -> analysis -> report, each agent's output the next one's input.

    python examples/multi_agent_chain.py "heat pumps in cold climates" --model local/smollm2

Two ways to combine agents are shown:

- ``run_chain``: the program passes each agent's answer to the next (a fixed pipeline; predictable).
- ``build_supervisor``: one agent gets the three as tools (``agent-researcher``, ...) and decides whom to ask
  (Mastra's supervisor pattern; flexible, needs a model that calls tools well).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from voiceserver.agent import Agent


@dataclass
class Stage:
    agent: Agent
    prompt: str  # put before the previous stage's output


def build_chain(model: object = "local/smollm2", *, research_model: object = None, analysis_model: object = None,
                report_model: object = None) -> list[Stage]:
    """The three agents of the chain. Each may use its own model (a string, a ChatModel, or a fallback list)."""
    researcher = Agent(
        name="Researcher",
        description="Collects the key facts about a topic.",
        instructions="You research topics. List the five most important facts, one per line, without commentary.",
        model=research_model or model,
    )
    analyst = Agent(
        name="Analyst",
        description="Finds what facts mean: trends, trade-offs, open questions.",
        instructions="You analyse research notes. Say what they imply: trends, trade-offs and open questions.",
        model=analysis_model or model,
    )
    writer = Agent(
        name="Writer",
        description="Writes a short report for a general audience.",
        instructions="You write short, plain reports: a title line, then one paragraph of at most five sentences.",
        model=report_model or model,
    )
    return [
        Stage(researcher, "Research this topic:"),
        Stage(analyst, "Analyse these research notes:"),
        Stage(writer, "Write a report from this analysis:"),
    ]


async def run_chain(topic: str, stages: list[Stage],
                    on_stage: Callable[[str, str], None] | None = None) -> dict[str, str]:
    """Run the stages in order; returns each agent's output by agent id (the last one is the report)."""
    outputs: dict[str, str] = {}
    text = topic
    for stage in stages:
        result = await stage.agent.generate(f"{stage.prompt}\n\n{text}", max_steps=1)
        text = result.text.strip()
        outputs[stage.agent.id] = text
        if on_stage is not None:
            on_stage(stage.agent.name, text)
    return outputs


def build_supervisor(stages: list[Stage], model: object = "local/smollm2") -> Agent:
    """One agent that delegates to the chain's agents, offered to its model as tools."""
    return Agent(
        name="Editor",
        instructions=("You produce reports. First ask the researcher for facts, then the analyst for an analysis of "
                      "those facts, then the writer for the report. Answer with the writer's report."),
        model=model,
        agents={"researcher": stages[0].agent, "analyst": stages[1].agent, "writer": stages[2].agent},
        default_options={"max_steps": 6},
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topic", nargs="?", default="heat pumps in cold climates")
    parser.add_argument("--model", default="local/smollm2")
    args = parser.parse_args()
    outputs = await run_chain(args.topic, build_chain(args.model),
                              on_stage=lambda name, text: print(f"--- {name} ---\n{text}\n"))
    print("=== Report ===\n" + list(outputs.values())[-1])


if __name__ == "__main__":
    asyncio.run(main())

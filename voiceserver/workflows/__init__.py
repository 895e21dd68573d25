"""Workflows: typed steps composed into graphs (then, parallel, branch, loops, foreach, map, sleep), run with
suspend / resume, streaming events and snapshots in a RunStore.

    step1 = create_step(id="step-1", input_schema=In, output_schema=Out, execute=step1_run)
    wf = create_workflow(id="test-workflow", input_schema=In, output_schema=Out).then(step1).commit()
    run = await wf.create_run()
    result = await run.start(input_data={"input": "London"})

See docs/workflows.md.
"""

from voiceserver.workflows.run import Run, RunStateError, StepResult, UnknownStepError, WorkflowResult, WorkflowStream
from voiceserver.workflows.schema import SchemaValidationError, WorkflowError
from voiceserver.workflows.step import AgentPrompt, AgentText, Step, StepContext, StepWriter, create_step
from voiceserver.workflows.workflow import Workflow, WorkflowBuildError, create_workflow

__all__ = [
    "AgentPrompt",
    "AgentText",
    "Run",
    "RunStateError",
    "SchemaValidationError",
    "Step",
    "StepContext",
    "StepResult",
    "StepWriter",
    "UnknownStepError",
    "Workflow",
    "WorkflowBuildError",
    "WorkflowError",
    "WorkflowResult",
    "WorkflowStream",
    "create_step",
    "create_workflow",
]

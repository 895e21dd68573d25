"""Every composition operator of the workflow builder, on pure steps."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from pydantic import BaseModel

from voiceserver.workflows import WorkflowBuildError, create_step, create_workflow


class In(BaseModel):
    input: str


class Out(BaseModel):
    output: str


class Num(BaseModel):
    value: int


def add(n: int, step_id: str | None = None):
    return create_step(id=step_id or f"add-{n}", input_schema=Num, output_schema=Num,
                       execute=lambda ctx: {"value": ctx.input_data.value + n})


async def test_contract_example_then():
    async def step1_run(ctx):
        return {"output": ctx.input_data.input + " + step-1"}

    step1 = create_step(id="step-1", input_schema=In, output_schema=Out, execute=step1_run)
    wf = create_workflow(id="test-workflow", description="Test workflow", input_schema=In,
                         output_schema=Out).then(step1).commit()
    run = await wf.create_run()
    result = await run.start(input_data={"input": "London"})
    assert result.status == "success"
    assert result.result == {"output": "London + step-1"}
    assert result.steps["step-1"].status == "success"
    assert result.steps["step-1"].output == {"output": "London + step-1"}
    assert result.steps["step-1"].payload == {"input": "London"}
    assert result.run_id == run.run_id


async def test_then_chain_passes_output_to_next_input_and_sync_steps_work():
    wf = create_workflow(id="chain", input_schema=Num, output_schema=Num)
    wf.then(add(1)).then(add(10)).then(add(100)).commit()
    result = await (await wf.create_run()).start(input_data={"value": 0})
    assert result.result == {"value": 111}
    assert [s for s in result.steps] == ["add-1", "add-10", "add-100"]
    assert result.steps["add-10"].payload == {"value": 1}


async def test_parallel_runs_concurrently_and_keys_outputs_by_step_id():
    started: list[str] = []
    both_started = asyncio.Event()

    def slow(step_id: str, n: int):
        async def run(ctx):
            started.append(step_id)
            if len(started) == 2:
                both_started.set()
            await asyncio.wait_for(both_started.wait(), 5)  # only completes if the other step runs meanwhile
            return {"value": ctx.input_data.value + n}
        return create_step(id=step_id, input_schema=Num, output_schema=Num, execute=run)

    class Joined(BaseModel):
        a: Num
        b: Num

    join = create_step(id="join", input_schema=Joined, output_schema=Num,
                       execute=lambda ctx: {"value": ctx.input_data.a.value * ctx.input_data.b.value})
    wf = create_workflow(id="par", input_schema=Num).parallel([slow("a", 1), slow("b", 2)]).then(join).commit()
    result = await (await wf.create_run()).start(input_data={"value": 3})
    assert result.status == "success", result.error
    assert result.steps["join"].payload == {"a": {"value": 4}, "b": {"value": 5}}
    assert result.result == {"value": 20}


async def test_branch_runs_first_true_condition_with_async_conditions():
    seen = []

    async def is_big(ctx):
        seen.append(("big", ctx.input_data.value))
        return ctx.input_data.value > 10

    def is_positive(ctx):
        seen.append(("positive", ctx.input_data.value))
        return ctx.input_data.value > 0

    wf = create_workflow(id="br", input_schema=Num)
    wf.branch([(is_big, add(1000, "big")), (is_positive, add(1, "small")), (lambda ctx: True, add(5, "also"))])
    wf.commit()
    small = await (await wf.create_run()).start(input_data={"value": 2})
    assert small.result == {"small": {"value": 3}}
    assert "big" not in small.steps and "also" not in small.steps
    assert seen == [("big", 2), ("positive", 2)]
    big = await (await wf.create_run()).start(input_data={"value": 50})
    assert big.result == {"big": {"value": 1050}}
    none_true = create_workflow(id="br2", input_schema=Num).branch([(lambda ctx: False, add(1))]).commit()
    nothing = await (await none_true.create_run()).start(input_data={"value": 1})
    assert nothing.status == "success" and nothing.result == {}


async def test_dowhile_and_dountil_see_iteration_count():
    counts: list[int] = []

    def below_five(ctx):
        counts.append(ctx.iteration_count)
        return ctx.input_data.value < 5

    wf = create_workflow(id="dw", input_schema=Num).dowhile(add(1), below_five).commit()
    result = await (await wf.create_run()).start(input_data={"value": 0})
    assert result.result == {"value": 5}
    assert counts == [1, 2, 3, 4, 5]

    wf2 = create_workflow(id="du", input_schema=Num).dountil(add(3), lambda ctx: ctx.iteration_count >= 4).commit()
    result2 = await (await wf2.create_run()).start(input_data={"value": 0})
    assert result2.result == {"value": 12}

    # dowhile runs the step at least once even when the condition is false from the start
    wf3 = create_workflow(id="dw3", input_schema=Num).dowhile(add(1), lambda ctx: False).commit()
    assert (await (await wf3.create_run()).start(input_data={"value": 7})).result == {"value": 8}


async def test_loop_limit_fails_with_clear_error():
    wf = create_workflow(id="forever", input_schema=Num).dowhile(add(1), lambda ctx: True, max_iterations=3).commit()
    result = await (await wf.create_run()).start(input_data={"value": 0})
    assert result.status == "failed"
    assert result.error["code"] == "loop_limit" and result.error["step_id"] == "add-1"
    assert "max_iterations=3" in result.error["message"]


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_foreach_keeps_order_and_bounds_concurrency(concurrency):
    running = 0
    peak = 0

    async def square(ctx):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (5 - ctx.input_data.value))  # later items finish first
        running -= 1
        return {"value": ctx.input_data.value ** 2}

    step = create_step(id="square", input_schema=Num, output_schema=Num, execute=square)
    wf = create_workflow(id="fe", input_schema=list[Num]).foreach(step, concurrency=concurrency).commit()
    result = await (await wf.create_run()).start(input_data=[{"value": i} for i in range(5)])
    assert result.status == "success", result.error
    assert result.result == [{"value": i * i} for i in range(5)]
    assert result.steps["square"].output == result.result
    assert peak == concurrency


async def test_foreach_on_a_non_list_fails_naming_the_step():
    wf = create_workflow(id="fe-bad", input_schema=Num).foreach(add(1)).commit()
    result = await (await wf.create_run()).start(input_data={"value": 1})
    assert result.status == "failed"
    assert result.error["step_id"] == "add-1" and "expects a list" in result.error["message"]


async def test_map_reshapes_between_steps_sync_and_async():
    async def to_num(ctx):
        return {"value": len(ctx.input_data.input)}

    wf = (create_workflow(id="mp", input_schema=In, output_schema=Out)
          .map(to_num).then(add(1))
          .map(lambda ctx: {"output": f"{ctx.input_data.value} via {ctx.get_init_data()['input']}"}, id="fmt")
          .commit())
    result = await (await wf.create_run()).start(input_data={"input": "abcd"})
    assert result.result == {"output": "5 via abcd"}
    assert result.steps["map-1"].output == {"value": 4}
    assert result.steps["fmt"].status == "success"


async def test_sleep_and_sleep_until_pass_data_through():
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=20)
    wf = (create_workflow(id="sl", input_schema=Num).then(add(1)).sleep(10).sleep(lambda ctx: 1)
          .sleep_until(soon).sleep_until(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)).then(add(2)).commit())
    result = await (await wf.create_run()).start(input_data={"value": 0})
    assert result.status == "success", result.error
    assert result.result == {"value": 3}
    assert dt.datetime.now(dt.UTC) >= soon
    assert [k for k in result.steps] == ["add-1", "sleep-2", "sleep-3", "sleep-4", "sleep-5", "add-2"]


async def test_nested_workflow_as_a_step():
    inner = create_workflow(id="inner", input_schema=Num, output_schema=Num).then(add(1)).then(add(2)).commit()
    outer = create_workflow(id="outer", input_schema=Num, output_schema=Num).then(inner).then(add(10)).commit()
    events = []
    run = await outer.create_run()
    run.watch(events.append)
    result = await run.start(input_data={"value": 0})
    assert result.result == {"value": 13}
    assert result.steps["inner"].output == {"value": 3}
    paths = [e["payload"]["path"] for e in events if e["type"] == "workflow-step-result"]
    assert ["inner", "add-1"] in paths and ["inner", "add-2"] in paths and ["inner"] in paths


async def test_builder_rejects_duplicates_uncommitted_and_bad_arguments():
    wf = create_workflow(id="dup").then(add(1))
    with pytest.raises(WorkflowBuildError, match="duplicate step id 'add-1'"):
        wf.then(add(1))
    with pytest.raises(WorkflowBuildError, match="not committed"):
        await wf.create_run()
    with pytest.raises(WorkflowBuildError, match="expected a step"):
        wf.then(lambda ctx: None)
    with pytest.raises(WorkflowBuildError, match="concurrency"):
        wf.foreach(add(2), concurrency=0)
    with pytest.raises(WorkflowBuildError, match="must be committed"):
        create_workflow(id="x").then(create_workflow(id="y").then(add(3)))
    wf.commit()
    with pytest.raises(WorkflowBuildError, match="committed"):
        wf.then(add(4))
    assert wf.describe()["graph"] == [{"type": "step", "step": "add-1"}]

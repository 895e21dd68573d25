"""Appointment booking driven entirely by voice: ask the day, ask the time, confirm, book.

Each question is a step that suspends with a ``prompt``; in a voice session the prompt is spoken, the caller's next
utterance becomes the step's ``resume_data`` (shaped into its ``resume_schema`` with structured output), and the
workflow continues. A caller who hangs up leaves the run suspended; calling back with the same resource id offers to
continue it.

Serve it (the agent decides when to start the workflow):

    voiceserver serve --app examples.booking:app

or use the pieces from Python: ``booking_workflow()``, ``receptionist(model=...)``.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

from voiceserver.agent import Agent
from voiceserver.voice_app import VoiceApp
from voiceserver.workflows import StepContext, create_step, create_workflow


class BookingRequest(BaseModel):
    service: str = Field("appointment", description="What the caller wants to book, e.g. 'dentist appointment'.")


class DayAnswer(BaseModel):
    day: str = Field(description="The day the caller asked for, e.g. 'Tuesday' or 'March 3'.")


class TimeAnswer(BaseModel):
    time: str = Field(description="The time the caller asked for, e.g. '3 pm' or '10:30'.")


class Confirmation(BaseModel):
    confirmed: bool = Field(description="True if the caller agreed, false if they declined.")


class Draft(BaseModel):
    service: str
    day: str = ""
    time: str = ""


class Booking(BaseModel):
    booked: bool
    message: str
    reference: str | None = None


async def ask_day(ctx: StepContext) -> dict:
    if ctx.resume_data is None:
        await ctx.suspend({"prompt": "Sure. Which day would you like to come in?"})
    return {"service": ctx.input_data.service, "day": ctx.resume_data.day}


async def ask_time(ctx: StepContext) -> dict:
    draft = ctx.input_data
    if ctx.resume_data is None:
        await ctx.suspend({"prompt": f"What time on {draft.day}?"})
    return {"service": draft.service, "day": draft.day, "time": ctx.resume_data.time}


async def confirm(ctx: StepContext) -> dict:
    draft = ctx.input_data
    if ctx.resume_data is None:
        await ctx.suspend({"prompt": f"So that is {draft.day} at {draft.time}. Shall I book it?"})
    if not ctx.resume_data.confirmed:
        return ctx.bail({"booked": False, "message": "Okay, I have not booked anything."})
    return draft.model_dump()


async def book(ctx: StepContext) -> dict:
    draft = ctx.input_data
    reference = hashlib.sha1(f"{ctx.run_id}{draft.day}{draft.time}".encode()).hexdigest()[:6].upper()
    return {"booked": True, "reference": reference,
            "message": f"You are booked for {draft.day} at {draft.time}. Your reference is {' '.join(reference)}."}


def booking_workflow(storage=None):
    """The four-step workflow; ``storage`` a RunStore (LanceDBStore to survive restarts)."""
    steps = [
        create_step(id="ask-day", input_schema=BookingRequest, output_schema=Draft, resume_schema=DayAnswer,
                    execute=ask_day),
        create_step(id="ask-time", input_schema=Draft, output_schema=Draft, resume_schema=TimeAnswer,
                    execute=ask_time),
        create_step(id="confirm", input_schema=Draft, output_schema=Draft, resume_schema=Confirmation,
                    execute=confirm),
        create_step(id="book", input_schema=Draft, output_schema=Booking, execute=book),
    ]
    workflow = create_workflow(id="book-appointment", description="Book an appointment",
                               input_schema=BookingRequest, output_schema=Booking, storage=storage)
    for step in steps:
        workflow = workflow.then(step)
    return workflow.commit()


def receptionist(model="local/smollm2", workflow=None):
    """An agent that starts the booking workflow when the caller wants an appointment."""
    return Agent(
        name="Receptionist",
        instructions=("You are a friendly receptionist on the phone. When the caller wants to book an appointment, "
                      "call the workflow-book-appointment tool. Otherwise answer in one short sentence."),
        model=model,
        workflows={"book-appointment": workflow or booking_workflow()},
    )


app = VoiceApp(agents={"Receptionist": receptionist()})

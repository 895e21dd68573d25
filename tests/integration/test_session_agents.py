"""Picking an agent per session, and agents declared in settings (an OpenAI-compatible model over the loopback
server, a tool by import path) serving a voice session."""

import json

import websockets
from pydantic import SecretStr

from voiceserver.agent import Agent
from voiceserver.client import VoiceClient
from voiceserver.server.composition import build_server, create_app
from voiceserver.settings import AgentConfig, MemoryConfig, Settings
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.testing.fake_openai import FakeOpenAI
from voiceserver.testing.fake_openai.chat import chat_routes
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server
from voiceserver.testing.servers import serve_app


async def test_session_start_picks_the_agent():
    agents = {"Assistant": Agent(name="Assistant", instructions="x", model=ScriptedChatModel(["General help."])),
              "Sales": Agent(name="Sales", instructions="x", model=ScriptedChatModel(["Let's talk prices."]))}
    async with voice_server(agents=agents) as vs:
        async with VoiceClient.connect(vs.ws_url, agent="Sales") as client:
            assert client.session["agent"] == "Sales"
            assert (await client.ask_text("hi")).reply_text == "Let's talk prices."
        async with VoiceClient.connect(vs.ws_url) as client:
            assert client.session["agent"] == "Assistant"
            assert (await client.ask_text("hi")).reply_text == "General help."
        async with websockets.connect(vs.ws_url) as ws:
            await ws.send(json.dumps({"type": "session.start", "agent": "Nobody"}))
            first = json.loads(await ws.recv())
            assert first["type"] == "error" and first["code"] == "unknown_agent" and "Sales" in first["message"]
            started = json.loads(await ws.recv())
            assert started["type"] == "session.started" and started["agent"] == "Assistant"


async def test_agents_from_settings_with_an_openai_compatible_model_and_a_tool_by_import_path():
    script = [{"tool_calls": [{"name": "weather", "arguments": {"city": "Paris"}}]},
              lambda body: "It is " + json.loads(body["messages"][-1]["content"])["conditions"] + " in Paris."]
    async with FakeOpenAI(chat_routes(script), api_key="sk-test-123") as fake:
        settings = Settings(
            openai_api_key=SecretStr("sk-test-123"), openai_base_url=fake.base_url,
            agent=AgentConfig(name="Assistant", model="openai/gpt-4o-mini", memory=MemoryConfig(type="none")),
            agents=[AgentConfig(name="Concierge", model="openai/gpt-4o-mini",
                                instructions="Answer weather questions with the tool.",
                                tools=["examples.custom_tools:weather"], memory=MemoryConfig(type="none"))],
        )
        server = build_server(settings, stt=ScriptedSTT(["x"]), tts=ToneTTS())
        assert set(server.agents) == {"Assistant", "Concierge"}
        async with serve_app(create_app(server)) as running, \
                VoiceClient.connect(running.ws_url + "/v1/voice", agent="Concierge") as client:
            turn = await client.ask_text("What's the weather in Paris?")
    assert turn.reply_text == "It is sunny in Paris.", turn.reply_text  # examples.custom_tools says Paris is sunny
    bodies = [body for path, body in fake.requests if path.endswith("/chat/completions")]
    assert bodies[0]["model"] == "gpt-4o-mini" and bodies[0]["tools"][0]["function"]["name"] == "weather"
    assert any(m["role"] == "tool" for m in bodies[1]["messages"]), "the tool result went back to the model"

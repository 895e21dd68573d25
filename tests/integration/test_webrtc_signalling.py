"""WebRTC signalling and the peer's lifetime against a real server: bad SDP and bodies, a full server shared with the
WebSocket, API keys, DELETE, a missing extra, an ICE timeout, and a caller that vanishes (SIGKILL)."""

import asyncio
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection

from voiceserver.client import VoiceClient
from voiceserver.settings import LimitsConfig, Settings, TurnConfig, WebRtcConfig
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ToneTTS
from voiceserver.testing.harness import voice_server
from voiceserver.testing.webrtc_caller import MicrophoneTrack, WebRtcCaller, WebRtcCallerError

SUPPORT = Path(__file__).resolve().parents[1] / "support"
sys.path.insert(0, str(SUPPORT))
import memory_app  # noqa: E402

REPLY = "Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau omega."


async def real_offer_sdp() -> str:
    """An offer as a caller makes it (microphone + the events channel); its peer is closed at once."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(MicrophoneTrack())
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def wait_until(condition, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def test_bad_offers_are_answered_as_documented_and_the_server_carries_on():
    settings = Settings(webrtc=WebRtcConfig(max_offer_bytes=8192))
    async with voice_server(settings=settings) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        good = await real_offer_sdp()
        no_codec = good.replace("opus/48000/2", "nonesuch/48000/2").replace("G722/8000", "nonesuch/8000") \
            .replace("PCMU/8000", "nonesuch/8000").replace("PCMA/8000", "nonesuch/8000")
        cases = [
            (b"not json", 400, "invalid_offer"),
            (json.dumps({"sdp": good, "type": "answer"}), 400, "invalid_offer"),
            (json.dumps({"type": "offer"}), 400, "invalid_offer"),
            (json.dumps({"sdp": "hello", "type": "offer"}), 400, "invalid_sdp"),
            (json.dumps({"sdp": good.split("m=application")[0], "type": "offer"}), 400, "invalid_sdp"),
            (json.dumps({"sdp": no_codec, "type": "offer"}), 400, "invalid_sdp"),  # aiortc itself refuses it
            (json.dumps({"sdp": good, "type": "offer", "resource": "a b"}), 400, "invalid_id"),
            (json.dumps({"sdp": good + "a=x:" + "y" * 9000 + "\r\n", "type": "offer"}), 413, "body_too_large"),
        ]
        for body, status, code in cases:
            response = await http.post("/v1/webrtc/offer", content=body)
            assert response.status_code == status, (code, response.text)
            error = response.json()["error"]
            assert error["code"] == code and error["message"], error
        assert not vs.server.hub.sessions, "a refused offer leaves no session behind"
        async with WebRtcCaller.connect(vs.http_url) as caller:
            await caller.send_text("still there?")
            assert (await caller.wait_for("response.done", 10))["text"]


async def test_webrtc_and_websocket_share_one_session_limit():
    settings = Settings(limits=LimitsConfig(max_sessions=1))
    async with voice_server(settings=settings) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        async with VoiceClient.connect(vs.ws_url):
            refused = await http.post("/v1/webrtc/offer", json={"sdp": await real_offer_sdp(), "type": "offer"})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_full"
        assert await wait_until(lambda: not vs.server.hub.sessions, 5)
        async with WebRtcCaller.connect(vs.http_url), websockets.connect(vs.ws_url) as ws:
            error = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert error["code"] == "server_full"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1013


async def test_api_keys_guard_signalling_like_the_voice_socket():
    settings = Settings(api_keys=["k-123"], webrtc=WebRtcConfig(ice_servers=[{"urls": "stun:stun.example.org"}]))
    async with voice_server(settings=settings) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        sdp = await real_offer_sdp()
        for response in (await http.post("/v1/webrtc/offer", json={"sdp": sdp, "type": "offer"}),
                         await http.post("/v1/webrtc/offer", json={"sdp": sdp, "type": "offer", "token": "wrong"}),
                         await http.get("/v1/webrtc/config"),
                         await http.delete("/v1/webrtc/sessions/sess_x")):
            assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        config = await http.get("/v1/webrtc/config", headers={"Authorization": "Bearer k-123"})
        assert config.json() == {"ice_servers": [{"urls": "stun:stun.example.org"}]}
        async with WebRtcCaller.connect(vs.http_url, token="k-123") as by_body:
            assert by_body.session_id
        async with WebRtcCaller.connect(vs.http_url, api_key="k-123") as by_header:
            assert by_header.session_id
        with pytest.raises(WebRtcCallerError, match="401"):
            async with WebRtcCaller.connect(vs.http_url):
                pass


async def test_delete_ends_the_session():
    async with voice_server() as vs, httpx.AsyncClient(base_url=vs.http_url) as http, \
            WebRtcCaller.connect(vs.http_url, resource="caller-d") as caller:
        session = vs.server.hub.sessions[caller.session_id]
        response = await http.delete(f"/v1/webrtc/sessions/{caller.session_id}")
        assert response.status_code == 200 and response.json() == {"session_id": caller.session_id,
                                                                    "closed": True}
        assert session.closed and caller.session_id not in vs.server.hub.sessions
        assert (await caller.wait_for("session.closed", 5))["reason"] == "client_end"
        again = await http.delete(f"/v1/webrtc/sessions/{caller.session_id}")
        assert again.status_code == 404 and again.json()["error"]["code"] == "session_not_found"


async def test_without_the_extra_the_offer_is_501_and_the_server_runs(monkeypatch):
    sdp = await real_offer_sdp()
    monkeypatch.setitem(sys.modules, "aiortc", None)  # `import aiortc` now raises ImportError, as when not installed
    monkeypatch.delitem(sys.modules, "voiceserver.gateway.webrtc_peer")
    async with voice_server() as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        response = await http.post("/v1/webrtc/offer", json={"sdp": sdp, "type": "offer"})
        assert response.status_code == 501
        error = response.json()["error"]
        assert error["code"] == "not_installed" and "voiceserver[webrtc]" in error["message"]
        assert not vs.server.hub.sessions
        async with VoiceClient.connect(vs.ws_url) as client:
            assert (await client.ask_text("hi")).reply_text


def end_reasons(caplog) -> list[str]:
    return [r.fields["reason"] for r in caplog.records if r.getMessage() == "webrtc peer ending the session"]


async def test_a_peer_that_never_connects_is_closed_at_the_ice_timeout(caplog):
    caplog.set_level(logging.INFO, logger="voiceserver")
    settings = Settings(webrtc=WebRtcConfig(ice_timeout_s=1.0))
    async with voice_server(settings=settings) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        sdp = "\r\n".join(line for line in (await real_offer_sdp()).split("\r\n")
                          if not line.startswith(("a=candidate", "a=end-of-candidates")))
        response = await http.post("/v1/webrtc/offer", json={"sdp": sdp, "type": "offer", "resource": "caller-i"})
        assert response.status_code == 200
        session = vs.server.hub.sessions[response.json()["session_id"]]
        assert await wait_until(lambda: session.closed and not vs.server.hub.sessions, 6), \
            "an unconnected peer is freed after webrtc.ice_timeout_s"
    assert end_reasons(caplog) == ["ice_timeout"]


async def test_a_vanished_caller_is_closed_within_seconds_and_memory_keeps_what_it_heard(tmp_path, models_dir,
                                                                                         monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="voiceserver")
    monkeypatch.setenv("LANCEDB_URI", str(tmp_path / "memory"))
    monkeypatch.setenv("VOICESERVER_MODELS_DIR", str(models_dir))
    app = memory_app.build()
    agent = app.get_agent("Assistant")
    agent.model = ScriptedChatModel([Reply(text=REPLY)])
    agent._resolved_model = None
    settings = Settings(webrtc=WebRtcConfig(peer_timeout_s=1.5), turn=TurnConfig(reply_max_sentences=0))
    async with voice_server(agent=agent, memory=app.memory, tts=ToneTTS(ms_per_char=40), settings=settings) as vs, \
            httpx.AsyncClient(base_url=vs.http_url) as http:
        proc = subprocess.Popen([sys.executable, str(SUPPORT / "webrtc_vanishing_caller.py"), vs.http_url, "caller-v"],
                                stdout=subprocess.PIPE)
        try:
            line = (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)).decode().split()
            assert line[0] == "ready", line
            session_id, thread = line[1], line[2]
            session = vs.server.hub.sessions[session_id]
            proc.send_signal(signal.SIGKILL)  # no goodbye: no BYE, no SCTP abort, no DTLS close
            killed_at = vs.server.hub.deps.clock()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        assert await wait_until(lambda: session.closed, 1.5 + 3.0), "closed after webrtc.peer_timeout_s"
        assert await wait_until(lambda: not vs.server.hub.sessions, 2)
        assert end_reasons(caplog) == ["peer_timeout"]
        playback = session._turn.playback
        alive_ms = (killed_at - playback.first_audio_at) * 1000
        assert playback.reported_played_ms <= alive_ms + 500 + 300, \
            "frames sent after the caller vanished are not counted as heard"
        messages = (await http.get(f"/v1/memory/threads/{thread}/messages")).json()["messages"]
    said = [(m["role"], m["content"]) for m in messages if m["type"] == "text"]
    assert said[0] == ("user", "tell me the alphabet")
    assistant = [m for m in messages if m["role"] == "assistant"]
    assert len(assistant) == 1 and assistant[0]["metadata"].get("interrupted") is True
    heard = assistant[0]["content"]
    assert heard and REPLY.startswith(heard) and "omega" not in heard, "only what was heard is kept"

// The voice chat page: readiness, the talk button, the transport (WebRTC by default, WebSocket when WebRTC
// fails; ?transport=webrtc|websocket forces one), reconnection after a lost server, and window.voiceStats.

import { AudioEngine, MicrophoneError } from "./audio.js";
import { createConversation } from "./conversation.js";
import { loadIdentity, newConversation } from "./identity.js";
import { describeError } from "./messages.js";
import { TransportError } from "./transport-errors.js";
import { WebRtcTransport } from "./transport-webrtc.js";
import { WebSocketTransport } from "./transport-websocket.js";
import { View } from "./view.js";

const params = new URLSearchParams(location.search);
const forced = ["webrtc", "websocket"].includes(params.get("transport")) ? params.get("transport") : null;
const apiKey = params.get("api_key") || params.get("token") || "";
const RETRY_MS = 1000;

// Test hook (a contract): what the page has received and played.
const stats = { transport: null, audioFramesReceived: 0, audioFramesPlayed: 0, turns: 0, sessionId: null,
                state: "loading", audioEnergy: 0, reconnects: 0 };
window.voiceStats = stats;

const view = new View(document.body);
const audio = new AudioEngine();
const identity = loadIdentity(apiKey);
const state = { wantLive: false, busy: false, transport: null, stream: null, stopMicMeter: null, ready: false,
                agent: null, iceServers: [], reconnecting: false };

function authHeaders() {
  return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
}

function setStatus(kind, text) {
  stats.state = kind;
  view.status(kind, text);
}

const handle = createConversation({ view, stats, send: (message) => state.transport && state.transport.send(message) });

function onEvent(message) {
  if (message.type === "session.started") {
    stats.sessionId = message.session_id;
    if (message.thread && message.thread !== identity.thread) identity.thread = message.thread;
  }
  handle(message);
}

async function checkReady() {
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    const body = await response.json();
    if (response.ok) return { ready: true };
    return { ready: false, missing: body.missing || [] };
  } catch {
    return { ready: false, unreachable: true };
  }
}

async function waitUntilReady() {
  for (;;) {
    const result = await checkReady();
    if (result.ready) return;
    if (result.unreachable) setStatus("unreachable", "Server unreachable");
    else setStatus("loading", `Loading models: ${result.missing.join(", ") || "engines"}…`);
    view.enableTalk(state.wantLive);
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

async function loadConfig() {
  try {
    const agents = await (await fetch("/v1/agents", { headers: authHeaders() })).json();
    state.agent = agents.default;
    view.agents(agents.agents || [], agents.default);
  } catch { /* the picker stays hidden */ }
  try {
    const config = await fetch("/v1/webrtc/config", { headers: authHeaders() });
    if (config.ok) state.iceServers = (await config.json()).ice_servers || [];
  } catch { /* host candidates only */ }
}

async function boot() {
  view.identity(identity);
  view.transport(forced);
  view.activity("idle");
  view.talking(false, false);
  setStatus("loading", "Connecting to the server…");
  view.enableTalk(false);
  await waitUntilReady();
  await loadConfig();
  state.ready = true;
  setStatus("ready", "Ready");
  view.enableTalk(true);
}

function makeTransport(name) {
  const hooks = { onEvent, onDrop, stats, audioEngine: audio, remoteAudio: document.getElementById("remote-audio") };
  return name === "webrtc" ? new WebRtcTransport(hooks) : new WebSocketTransport(hooks);
}

async function connect() {
  const order = forced ? [forced] : ["webrtc", "websocket"];
  let lastError = null;
  for (const name of order) {
    const transport = makeTransport(name);
    try {
      const agent = identity.agent || view.agentPicker.value || state.agent; // a token may fix the agent
      await transport.start({ stream: state.stream, context: audio.context, identity, agent,
                              apiKey, iceServers: state.iceServers });
      if (!state.wantLive) { // stopped while connecting
        await transport.stop();
        return;
      }
      state.transport = transport;
      stats.transport = name;
      view.transport(name);
      view.notice(name === "websocket" && !forced && lastError ? "Using the WebSocket connection (WebRTC is not available here)." : "");
      setStatus("connected", "Connected");
      view.activity("listening");
      return;
    } catch (error) {
      await transport.stop().catch(() => {});
      lastError = error;
      if (error instanceof TransportError && error.final) break;
    }
  }
  throw lastError || new TransportError("unreachable", "Can't reach the server.");
}

async function startTalking() {
  state.wantLive = true;
  state.busy = true;
  view.talking(false, true);
  view.notice("");
  setStatus("connecting", "Connecting…");
  try {
    await audio.ready();
    state.stream = await audio.microphone();
    state.stopMicMeter = audio.meter(state.stream, (level) => view.level(level));
    await connect();
  } catch (error) {
    await failed(error);
  } finally {
    state.busy = false;
    view.talking(state.wantLive && Boolean(state.transport), false);
  }
}

async function failed(error) {
  const code = error && error.code;
  if (state.wantLive && (code === "unreachable" || code === "server_shutdown")) {
    reconnect(code);
    return;
  }
  releaseMicrophone();
  state.wantLive = false;
  view.notice(describeError(code, error && error.message), code);
  if (error instanceof MicrophoneError) setStatus("error", code === "mic_denied" ? "Microphone blocked" : "No microphone");
  else if (code === "server_full") setStatus("busy", "Server busy");
  else setStatus("error", "Could not connect");
  view.activity("idle");
}

function onDrop(reason) {
  state.transport = null;
  if (!state.wantLive) return;
  reconnect(reason);
}

async function reconnect(reason) {
  if (state.reconnecting) return;
  state.reconnecting = true;
  stats.reconnects += 1;
  view.notice(describeError(reason), reason);
  setStatus("reconnecting", "Reconnecting…");
  view.activity("waiting");
  view.talking(true, false);
  try {
    while (state.wantLive) {
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      const result = await checkReady();
      if (!state.wantLive) return;
      if (!result.ready) {
        if (result.unreachable) {
          setStatus("unreachable", "Server unreachable");
          view.notice(describeError("unreachable"), "unreachable");
        } else {
          setStatus("reconnecting", "Reconnecting…");
          view.notice(`The server is starting (loading ${result.missing.join(", ") || "engines"}). Reconnecting…`,
                      "server_restart");
        }
        continue;
      }
      try {
        await connect();
        view.notice("");
        return;
      } catch (error) {
        if (!(error instanceof TransportError) || !["unreachable", "server_shutdown"].includes(error.code)) {
          await failed(error);
          return;
        }
      }
    }
  } finally {
    state.reconnecting = false;
    view.talking(state.wantLive && Boolean(state.transport), false);
  }
}

function releaseMicrophone() {
  if (state.stopMicMeter) state.stopMicMeter();
  state.stopMicMeter = null;
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
  view.level(0);
}

async function stopTalking() {
  state.wantLive = false;
  const transport = state.transport;
  state.transport = null;
  if (transport) await transport.stop();
  releaseMicrophone();
  view.talking(false, false);
  view.activity("idle");
  setStatus("ready", "Ready");
}

view.talk.addEventListener("click", () => {
  if (state.busy) return;
  if (state.wantLive) stopTalking();
  else startTalking();
});

view.textForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = view.textInput.value.trim();
  if (!text || !state.transport) return;
  view.addLine("user", text);
  state.transport.send({ type: "input.text", text });
  view.textInput.value = "";
});

document.getElementById("new-conversation").addEventListener("click", async () => {
  const live = state.wantLive;
  if (live) await stopTalking();
  identity.thread = newConversation(identity);
  view.identity(identity);
  view.transcript.querySelectorAll(".line, .card").forEach((node) => node.remove());
  view.empty.hidden = false;
  if (live) startTalking();
});

boot();

// The WebSocket transport (/v1/voice, the native protocol): a capture worklet sends 16 kHz pcm16 frames, a
// playback worklet plays the reply with a small jitter buffer, holds it on response.paused, goes on at
// response.resumed, clears it on response.cancelled (and when the caller talks over the tail of a complete reply)
// and reports response.played. Events are the native JSON messages, handed to the same handler as the WebRTC transport's.

import { TransportError } from "./transport-errors.js";

const OPEN_TIMEOUT_MS = 8000;
const PLAYED_EVERY_MS = 200;

export class WebSocketTransport {
  constructor({ onEvent, onDrop, stats }) {
    this.name = "websocket";
    this.onEvent = onEvent;
    this.onDrop = onDrop;
    this.stats = stats;
    this.ws = null;
    this.stopping = false;
    this.audioTurn = null;
    this.lastPlayedSent = 0;
    this.playedBefore = stats.audioFramesPlayed; // the counters add up across reconnections
    this.finished = new Set(); // turns whose reply is complete
    this.playingTurn = null; // the turn the playback worklet plays now
  }

  async start({ stream, context, identity, agent, apiKey }) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = apiKey ? `?api_key=${encodeURIComponent(apiKey)}` : "";
    const ws = new WebSocket(`${scheme}://${location.host}/v1/voice${query}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    const outputRate = [16000, 24000, 48000].includes(context.sampleRate) ? context.sampleRate : 24000;
    this.outputRate = outputRate;

    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new TransportError("unreachable", "The server did not answer.")),
        OPEN_TIMEOUT_MS);
      ws.onopen = () => { clearTimeout(timer); resolve(); };
      ws.onerror = () => { clearTimeout(timer); reject(new TransportError("unreachable", "Can't reach the server.")); };
    });

    this.playback = new AudioWorkletNode(context, "playback", {
      numberOfInputs: 0, outputChannelCount: [1], processorOptions: { inputRate: outputRate },
    });
    this.playback.connect(context.destination);
    this.playback.port.onmessage = (event) => this.onPlayed(event.data);
    this.source = context.createMediaStreamSource(stream);
    this.capture = new AudioWorkletNode(context, "capture", { numberOfOutputs: 0 });
    this.capture.port.onmessage = (event) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(event.data);
    };

    const started = new Promise((resolve, reject) => {
      this.pendingStart = { resolve, reject };
      setTimeout(() => reject(new TransportError("unreachable", "The server did not start the session.")),
        OPEN_TIMEOUT_MS);
    });
    ws.onmessage = (event) => this.onMessage(event.data);
    ws.onclose = (event) => this.onClose(event);
    const start = { type: "session.start", resource: identity.caller, thread: identity.thread,
                    audio: { encoding: "pcm16", sample_rate: 16000 },
                    output_audio: { encoding: "pcm16", sample_rate: outputRate } };
    if (agent) start.agent = agent;
    ws.send(JSON.stringify(start));
    const session = await started;
    this.source.connect(this.capture); // the microphone flows once the session runs
    return session;
  }

  onMessage(data) {
    if (typeof data !== "string") {
      const samples = data.byteLength / 2;
      this.stats.audioFramesReceived += samples / (this.outputRate * 0.02);
      this.playback.port.postMessage({ type: "audio", turn: this.audioTurn, samples: data }, [data]);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (this.pendingStart) {
      if (message.type === "session.started") {
        this.pendingStart.resolve(message);
        this.pendingStart = null;
      } else if (message.type === "error" && ["server_full", "server_shutdown", "unauthorized"].includes(message.code)) {
        this.pendingStart.reject(new TransportError(message.code, message.message));
        this.pendingStart = null;
        return;
      }
    }
    if (message.type === "session.closed" && message.reason === "server_shutdown") this.serverClosing = true;
    if (message.type === "response.audio.started") this.audioTurn = message.turn_id;
    if (message.type === "response.cancelled") this.playback.port.postMessage({ type: "clear" });
    if (message.type === "response.paused") this.playback.port.postMessage({ type: "pause" });
    if (message.type === "response.resumed") this.playback.port.postMessage({ type: "resume" });
    if (message.type === "response.done" && !message.interrupted) {
      this.finished.add(message.turn_id);
      if (this.finished.size > 16) this.finished.delete(this.finished.values().next().value); // bounded
    }
    if (message.type === "speech.started" && this.finished.has(this.playingTurn)) {
      // Talking over the last audio of a complete reply: the server will not cut it any more, so stop it here.
      this.playback.port.postMessage({ type: "clear" });
    }
    this.onEvent(message);
  }

  onPlayed(report) {
    if (report.type !== "played" || !report.turn) return;
    this.playingTurn = report.turn;
    this.stats.audioFramesPlayed = this.playedBefore + report.audibleFrames;
    const now = performance.now();
    if (now - this.lastPlayedSent >= PLAYED_EVERY_MS || report.final) {
      this.lastPlayedSent = now;
      this.send({ type: "response.played", turn_id: report.turn, played_ms: report.ms });
    }
  }

  onClose(event) {
    if (this.pendingStart) {
      const code = event.code === 1013 ? "server_full" : event.code === 1008 ? "unauthorized" : "unreachable";
      this.pendingStart.reject(new TransportError(code, "The server closed the connection."));
      this.pendingStart = null;
    }
    this.teardown();
    if (!this.stopping) this.onDrop(event.code === 1001 || this.serverClosing ? "server_restart" : "connection_lost");
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  teardown() {
    if (this.capture) this.capture.port.postMessage({ type: "stop" });
    if (this.source) this.source.disconnect();
    if (this.playback) this.playback.disconnect();
  }

  async stop() {
    this.stopping = true;
    this.send({ type: "session.end" });
    if (this.ws) this.ws.close(1000);
    this.teardown();
  }
}

// The WebRTC transport: the microphone track goes to the server as Opus, the reply comes back on one audio track
// (the server paces it and drops it at once on a barge-in, so nothing here needs clearing), and the native JSON
// events travel on the "events" data channel, handled exactly like the WebSocket transport's.

import { TransportError } from "./transport-errors.js";

const GATHER_TIMEOUT_MS = 2500;
const CONNECT_TIMEOUT_MS = 10000;
const STATS_EVERY_MS = 500;

function authHeaders(apiKey) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  return headers;
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); resolve(); };
    const timer = setTimeout(done, GATHER_TIMEOUT_MS); // host candidates come at once; do not wait for a slow STUN
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") done();
    });
  });
}

export class WebRtcTransport {
  constructor({ onEvent, onDrop, stats, audioEngine, remoteAudio }) {
    this.name = "webrtc";
    this.onEvent = onEvent;
    this.onDrop = onDrop;
    this.stats = stats;
    this.audioEngine = audioEngine;
    this.remoteAudio = remoteAudio; // an <audio> element: Chrome plays a remote track only through one
    this.stopping = false;
    this.pc = null;
    this.sessionId = null;
    this.playedBefore = stats.audioFramesPlayed;
    this.receivedBefore = stats.audioFramesReceived;
  }

  async start({ stream, identity, agent, apiKey, iceServers }) {
    if (typeof RTCPeerConnection === "undefined") throw new TransportError("unsupported", "No WebRTC in this browser.");
    const pc = new RTCPeerConnection({ iceServers: iceServers || [] });
    this.pc = pc;
    const channel = pc.createDataChannel("events", { ordered: true });
    this.channel = channel;
    for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
    pc.ontrack = (event) => this.onTrack(event);

    const opened = new Promise((resolve, reject) => {
      this.pendingStart = { resolve, reject };
      setTimeout(() => reject(new TransportError("ice_failed", "The voice connection could not be set up.")),
        CONNECT_TIMEOUT_MS);
    });
    channel.onmessage = (event) => this.onMessage(event.data);
    channel.onclose = () => this.dropped("connection_lost");
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") {
        if (this.pendingStart) this.pendingStart.reject(new TransportError("ice_failed", "The voice connection failed."));
        this.dropped("connection_lost");
      }
    };

    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const body = { sdp: pc.localDescription.sdp, type: "offer", resource: identity.caller, thread: identity.thread };
    if (agent) body.agent = agent;
    if (apiKey) body.token = apiKey;
    let response;
    try {
      response = await fetch("/v1/webrtc/offer", { method: "POST", headers: authHeaders(apiKey), body: JSON.stringify(body) });
    } catch {
      pc.close();
      throw new TransportError("unreachable", "Can't reach the server.");
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      pc.close();
      const error = answer.error || {};
      throw new TransportError(error.code || `http_${response.status}`, error.message || response.statusText,
        response.status);
    }
    this.sessionId = answer.session_id;
    this.apiKey = apiKey;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    const session = await opened;
    this.statsTimer = setInterval(() => this.pollStats(), STATS_EVERY_MS);
    return session;
  }

  onTrack(event) {
    const remote = event.streams[0] || new MediaStream([event.track]);
    this.remoteAudio.srcObject = remote;
    this.remoteAudio.play().catch(() => { /* autoplay needs the talk click, which started all this */ });
    this.stopMeter = this.audioEngine.meter(remote, (_level, audibleFrames) => {
      this.stats.audioFramesPlayed = this.playedBefore + audibleFrames;
    });
  }

  onMessage(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (this.pendingStart && message.type === "session.started") {
      this.pendingStart.resolve(message);
      this.pendingStart = null;
    }
    if (message.type === "session.closed" && message.reason === "server_shutdown") this.dropped("server_restart");
    this.onEvent(message);
  }

  async pollStats() {
    if (!this.pc) return;
    const report = await this.pc.getStats();
    report.forEach((entry) => {
      if (entry.type === "inbound-rtp" && entry.kind === "audio") {
        this.stats.audioFramesReceived = this.receivedBefore + (entry.packetsReceived || 0);
        this.stats.audioEnergy = entry.totalAudioEnergy || 0;
      }
    });
  }

  dropped(reason) {
    if (this.stopping || this.isDropped) return;
    this.isDropped = true;
    this.teardown();
    this.onDrop(reason);
  }

  send(message) {
    if (this.channel && this.channel.readyState === "open") this.channel.send(JSON.stringify(message));
  }

  teardown() {
    clearInterval(this.statsTimer);
    if (this.stopMeter) this.stopMeter();
    if (this.pc) this.pc.close();
    this.remoteAudio.srcObject = null;
  }

  async stop() {
    this.stopping = true;
    this.send({ type: "session.end" });
    if (this.sessionId) {
      const headers = this.apiKey ? { Authorization: `Bearer ${this.apiKey}` } : {};
      fetch(`/v1/webrtc/sessions/${encodeURIComponent(this.sessionId)}`, { method: "DELETE", headers, keepalive: true })
        .catch(() => { /* the server also notices the closed connection */ });
    }
    this.teardown();
  }
}

// The page's audio: one AudioContext, its worklets, the microphone (with echo cancellation, noise suppression and
// automatic gain requested), and level meters.

const WORKLETS = ["/static/worklets/meter.js", "/static/worklets/capture.js", "/static/worklets/playback.js"];

export class MicrophoneError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code; // mic_denied | mic_missing | mic_busy | mic_unsupported
  }
}

export class AudioEngine {
  constructor() {
    this.context = null;
    this.loaded = null;
  }

  async ready() {
    if (!this.context) {
      this.context = new AudioContext({ latencyHint: "interactive" });
      this.loaded = Promise.all(WORKLETS.map((url) => this.context.audioWorklet.addModule(url)));
    }
    await this.context.resume();
    await this.loaded;
    return this.context;
  }

  async microphone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new MicrophoneError("mic_unsupported", "This browser cannot use a microphone here (it needs https or localhost).");
    }
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
        video: false,
      });
    } catch (error) {
      const name = error && error.name;
      if (name === "NotAllowedError" || name === "SecurityError") {
        throw new MicrophoneError("mic_denied", "Microphone access is blocked. Allow the microphone for this site " +
          "(the icon in the address bar), then press Talk again.");
      }
      if (name === "NotFoundError" || name === "OverconstrainedError") {
        throw new MicrophoneError("mic_missing", "No microphone was found. Plug one in and press Talk again.");
      }
      if (name === "NotReadableError" || name === "AbortError") {
        throw new MicrophoneError("mic_busy", "The microphone is in use by another application.");
      }
      throw new MicrophoneError("mic_unsupported", `The microphone could not be opened (${name || error}).`);
    }
  }

  // A meter on a stream: calls onLevel(level 0..1, audibleFrames) about every 60 ms. Returns a disconnect function.
  meter(stream, onLevel) {
    const source = this.context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(this.context, "level-meter", { numberOfOutputs: 0 });
    node.port.onmessage = (event) => onLevel(event.data.level, event.data.audibleFrames);
    source.connect(node);
    return () => {
      node.port.postMessage({ type: "stop" });
      source.disconnect();
    };
  }
}

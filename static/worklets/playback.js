// Reply playback for the WebSocket transport (AudioWorklet): a small jitter buffer of pcm16 from the server,
// resampled to the context's rate on arrival, played after 60 ms are buffered, held while the server pauses the
// reply (the caller may be interrupting), cleared at once on a barge-in.
// It reports how much of each turn it really played ({type: "played", turn, ms}) and how many 20 ms frames of
// audible reply audio it rendered, so the page can send response.played and fill window.voiceStats.
const PREBUFFER_S = 0.06;
const MAX_BUFFER_S = 30;
const REPORT_EVERY_S = 0.1;

class Playback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.inputRate = (options.processorOptions && options.processorOptions.inputRate) || sampleRate;
    this.step = this.inputRate / sampleRate; // input samples per output sample
    this.queue = []; // {turn, data: Float32Array (at sampleRate), offset}
    this.buffered = 0;
    this.playing = false;
    this.paused = false;
    this.t = 0;
    this.previous = 0;
    this.turn = null;
    this.playedSamples = 0;
    this.sinceReport = 0;
    this.frameSamples = Math.round(sampleRate * 0.02);
    this.frameCount = 0;
    this.frameEnergy = 0;
    this.audibleFrames = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(message) {
    if (message.type === "audio") {
      const samples = new Int16Array(message.samples);
      const data = this.resample(samples);
      if (this.buffered + data.length > MAX_BUFFER_S * sampleRate) return; // bounded: the server paces anyway
      this.queue.push({ turn: message.turn, data, offset: 0 });
      this.buffered += data.length;
    } else if (message.type === "clear") {
      this.report(true);
      this.queue = [];
      this.buffered = 0;
      this.playing = false;
      this.paused = false;
    } else if (message.type === "pause") {
      this.paused = true;
      this.report(true);
    } else if (message.type === "resume") {
      this.paused = false;
    }
  }

  resample(samples) {
    if (this.step === 1) {
      const out = new Float32Array(samples.length);
      for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 32768;
      return out;
    }
    const out = [];
    for (let i = 0; i < samples.length; i++) {
      const y = samples[i] / 32768;
      while (this.t <= 1) {
        out.push(this.previous + (y - this.previous) * this.t);
        this.t += this.step;
      }
      this.t -= 1;
      this.previous = y;
    }
    return Float32Array.from(out);
  }

  report(force) {
    if (this.turn !== null && (force || this.sinceReport >= REPORT_EVERY_S * sampleRate)) {
      this.port.postMessage({ type: "played", turn: this.turn, ms: Math.round((this.playedSamples / sampleRate) * 1000),
                              audibleFrames: this.audibleFrames, final: Boolean(force) });
      this.sinceReport = 0;
    }
  }

  process(_inputs, outputs) {
    const output = outputs[0];
    const channel = output[0];
    if (!this.playing && this.buffered >= PREBUFFER_S * sampleRate) this.playing = true;
    for (let i = 0; i < channel.length; i++) {
      let value = 0;
      if (this.paused) {
        value = 0;
      } else if (this.playing && this.queue.length) {
        const head = this.queue[0];
        if (head.turn !== this.turn) {
          this.report(true);
          this.turn = head.turn;
          this.playedSamples = 0;
        }
        value = head.data[head.offset++];
        this.buffered--;
        this.playedSamples++;
        this.sinceReport++;
        if (head.offset >= head.data.length) this.queue.shift();
      } else if (this.playing) {
        this.playing = false; // ran dry: wait for a little audio again before resuming
        this.report(true);
      }
      channel[i] = value;
      this.frameEnergy += value * value;
      if (++this.frameCount === this.frameSamples) {
        const rms = Math.sqrt(this.frameEnergy / this.frameCount);
        if (rms > 0.00316) this.audibleFrames++; // -50 dBFS
        this.frameCount = 0;
        this.frameEnergy = 0;
      }
    }
    for (let c = 1; c < output.length; c++) output[c].set(channel);
    this.report(false);
    return true;
  }
}

registerProcessor("playback", Playback);

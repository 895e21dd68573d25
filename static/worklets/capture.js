// Microphone capture for the WebSocket transport (AudioWorklet): any context rate -> 16 kHz mono pcm16, posted
// in 20 ms frames (320 samples) as ArrayBuffers. A windowed-sinc low-pass (31 taps, 7.2 kHz) keeps what Whisper
// hears free of aliasing, then linear interpolation picks the 16 kHz samples.
const OUT_RATE = 16000;
const FRAME = 320;
const TAPS = 31;

function lowPass(cutoff) { // cutoff in cycles per input sample
  const taps = new Float32Array(TAPS);
  const mid = (TAPS - 1) / 2;
  let sum = 0;
  for (let i = 0; i < TAPS; i++) {
    const n = i - mid;
    const sinc = n === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * n) / (Math.PI * n);
    const hamming = 0.54 - 0.46 * Math.cos((2 * Math.PI * i) / (TAPS - 1));
    taps[i] = sinc * hamming;
    sum += taps[i];
  }
  for (let i = 0; i < TAPS; i++) taps[i] /= sum;
  return taps;
}

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.taps = this.step > 1 ? lowPass(Math.min(7200, 0.45 * OUT_RATE) / sampleRate) : null;
    this.history = new Float32Array(TAPS);
    this.head = 0;
    this.t = 0;
    this.previous = 0;
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
    this.active = true;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === "stop") this.active = false;
    };
  }

  filter(x) {
    if (!this.taps) return x;
    this.history[this.head] = x;
    let y = 0;
    let index = this.head;
    for (let i = 0; i < TAPS; i++) {
      y += this.taps[i] * this.history[index];
      index = index === 0 ? TAPS - 1 : index - 1;
    }
    this.head = (this.head + 1) % TAPS;
    return y;
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = clipped < 0 ? clipped * 32768 : clipped * 32767;
    if (this.filled === FRAME) {
      const out = this.frame.slice().buffer;
      this.port.postMessage(out, [out]);
      this.filled = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return this.active;
    const channels = input.length;
    const length = input[0].length;
    for (let i = 0; i < length; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      const y = this.filter(x / channels);
      // Output samples fall between the previous input sample (0) and this one (1).
      while (this.t <= 1) {
        this.emit(this.previous + (y - this.previous) * this.t);
        this.t += this.step;
      }
      this.t -= 1;
      this.previous = y;
    }
    return this.active;
  }
}

registerProcessor("capture", Capture);

// Level meter (AudioWorklet): the input level for the meter, and how many 20 ms windows were audible.
// Used on the microphone (the input level meter) and on the assistant's WebRTC track (what was played).
const AUDIBLE_DBFS = -50;

class LevelMeter extends AudioWorkletProcessor {
  constructor() {
    super();
    this.window = Math.round(sampleRate * 0.02);
    this.count = 0;
    this.sum = 0;
    this.audibleFrames = 0;
    this.frames = 0;
    this.peak = 0;
    this.active = true;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === "stop") this.active = false;
    };
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return this.active;
    const channel = input[0];
    for (let i = 0; i < channel.length; i++) {
      const x = channel[i];
      this.sum += x * x;
      if (++this.count === this.window) {
        const rms = Math.sqrt(this.sum / this.count);
        const dbfs = rms > 0 ? 20 * Math.log10(rms) : -120;
        if (dbfs > AUDIBLE_DBFS) this.audibleFrames++;
        this.peak = Math.max(this.peak, Math.min(1, Math.max(0, (dbfs + 60) / 60)));
        this.count = 0;
        this.sum = 0;
        if (++this.frames % 3 === 0) { // about every 60 ms
          this.port.postMessage({ level: this.peak, audibleFrames: this.audibleFrames });
          this.peak = 0;
        }
      }
    }
    return this.active;
  }
}

registerProcessor("level-meter", LevelMeter);

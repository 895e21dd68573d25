"""Spoken test input: Piper speaks a sentence, resampled to 16 kHz pcm16, reproducibly.

Piper's default synthesis adds random noise, so the same text sounds slightly different each time (and Whisper
may then hear "friends" for "France" once in a while). ``noise_scale=0`` makes every run identical.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..audio import Resampler

VOICE_FILE = Path("piper") / "en_US-joe-medium.onnx"


@lru_cache(maxsize=2)
def _voice(models_dir: str):
    from piper.voice import PiperVoice

    return PiperVoice.load(str(Path(models_dir) / VOICE_FILE))


def speak(models_dir: Path | str, text: str, *, lead_silence_ms: int = 250, rate: int = 16000) -> bytes:
    """``text`` spoken by the embedded Piper voice: pcm16 mono at ``rate``, after ``lead_silence_ms`` of silence."""
    from piper.config import SynthesisConfig

    voice = _voice(str(models_dir))
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=config))
    resampler = Resampler(voice.config.sample_rate, rate)
    return b"\x00\x00" * (rate * lead_silence_ms // 1000) + resampler.process(pcm) + resampler.flush()

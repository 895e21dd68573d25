"""Local speech-to-text with faster-whisper (CTranslate2), int8 on the CPU.

The model is loaded once per process and shared by every session; an :class:`EngineGate` bounds how many
transcriptions run at once (``workers``, matching the model's ``num_workers``) and exports the queue depth. The
blocking ``transcribe`` call AND the iteration of its lazy segment generator both happen inside one worker thread,
so the event loop never runs decoder steps.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from ..audio import pcm16_to_float32, rms_dbfs
from ..engines import EngineGate, ProviderError
from ..logs import get_logger
from ..metrics import Metrics
from .base import SpeechToText, SttCapabilities, TranscriptResult

log = get_logger("STT")

SAMPLE_RATE = 16000
# Below this much audio there is nothing a person could have said (a click, a cut-off breath): skip the model.
MIN_AUDIO_MS = 100
# Digital silence (a push-to-talk commit with nothing said): skip the model too; real room noise is far above this.
SILENCE_DBFS = -90.0


class FasterWhisperSTT(SpeechToText):
    """faster-whisper on a local CTranslate2 model directory (for example ``models/whisper-base``).

    ``threads`` is CTranslate2's ``cpu_threads`` per transcription, ``workers`` how many transcriptions may run in
    parallel. Decoding uses the settings that are fastest for one short utterance without costing accuracy: greedy
    (``beam_size`` 1 by default), no timestamps, no conditioning on previous text (each utterance stands alone), and
    no VAD filter (the caller already segmented the speech).
    """

    provider = "faster-whisper"
    capabilities = SttCapabilities(streaming=False, sample_rate=SAMPLE_RATE)

    def __init__(self, model_dir: Path | str, *, threads: int = 2, workers: int = 1, beam_size: int = 1,
                 language: str | None = "en", compute_type: str = "int8", metrics: Metrics | None = None,
                 timeout_s: float = 30.0, retries: int = 0, initial_prompt: str | None = None):
        super().__init__(timeout_s=timeout_s, retries=retries, language=language, metrics=metrics)
        if threads < 1 or workers < 1 or beam_size < 1:
            raise ValueError("threads, workers and beam_size must be at least 1")
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.workers = workers
        self.beam_size = beam_size
        self.compute_type = compute_type
        self.initial_prompt = initial_prompt
        self.gate = EngineGate("stt", workers, self.metrics)
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._async_load_lock: asyncio.Lock | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load_sync(self) -> Any:
        with self._load_lock:
            if self._model is None:
                if not (self.model_dir / "model.bin").is_file():
                    raise ProviderError("model_missing", f"faster-whisper model not found in {self.model_dir} "
                                        "(run `voiceserver models fetch`)", provider=self.provider)
                try:
                    from faster_whisper import WhisperModel
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise ProviderError("not_installed", "faster-whisper is not installed: "
                                        "pip install 'voiceserver[local]'", provider=self.provider) from exc
                self._model = WhisperModel(str(self.model_dir), device="cpu", compute_type=self.compute_type,
                                           cpu_threads=self.threads, num_workers=self.workers,
                                           local_files_only=True)
                self.metrics.engines_loaded.labels("stt").set(1)
                log.info(f"loaded faster-whisper from {self.model_dir}",
                         fields={"threads": self.threads, "workers": self.workers, "compute_type": self.compute_type})
            return self._model

    async def load(self) -> None:
        """Load the model in a worker thread (idempotent; concurrent callers share one load)."""
        if self._model is not None:
            return
        if self._async_load_lock is None:
            self._async_load_lock = asyncio.Lock()
        async with self._async_load_lock:
            if self._model is None:
                await asyncio.to_thread(self._load_sync)

    async def warmup(self) -> None:
        """Load, then transcribe 1 s of silence so the first real call does not pay for cold caches."""
        await self.load()
        silence = bytes(SAMPLE_RATE * 2)
        await self.gate.run(self._run_model, silence, self.language)

    def _run_model(self, pcm16: bytes, language: str | None) -> TranscriptResult:
        """Blocking: runs in a worker thread, and consumes the lazy segment generator here too."""
        model = self._model if self._model is not None else self._load_sync()
        audio = pcm16_to_float32(pcm16)
        segments, info = model.transcribe(
            audio, language=language, beam_size=self.beam_size, best_of=self.beam_size,
            without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
            initial_prompt=self.initial_prompt,
        )
        parts = [segment.text for segment in segments]  # the decode happens here, during iteration
        text = "".join(parts).strip()
        return TranscriptResult(
            text=text, language=getattr(info, "language", language),
            duration_ms=len(pcm16) / 2 / SAMPLE_RATE * 1000,
            details={"language_probability": getattr(info, "language_probability", None), "segments": len(parts)},
        )

    async def _transcribe(self, audio: bytes, language: str | None) -> TranscriptResult:
        duration_ms = len(audio) / 2 / SAMPLE_RATE * 1000
        if duration_ms < MIN_AUDIO_MS or rms_dbfs(audio) < SILENCE_DBFS:
            return TranscriptResult(text="", language=language, duration_ms=duration_ms)
        if self._model is None:
            await self.load()
        return await self.gate.run(self._run_model, audio, language)

    def busy(self) -> bool:
        return self.gate.busy > 0 or self.gate.waiting > 0

    async def close(self) -> None:
        """Drop the model (CTranslate2 frees its memory when the object goes)."""
        self._model = None
        self.metrics.engines_loaded.labels("stt").set(0)

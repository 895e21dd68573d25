"""Local speech-to-text with faster-whisper (CTranslate2), int8 on the CPU.

The model is loaded once per process and shared by every session; an :class:`EngineGate` bounds how many
transcriptions run at once (``workers``, matching the model's ``num_workers``) and exports the queue depth. The
blocking call AND the iteration of any lazy generator happen inside one worker thread, so the event loop never runs
decoder steps.

The encoder window. Whisper's encoder is trained on 30 s windows, and faster-whisper always pads the features to
30 s, so a 2 s question costs as much as a 30 s one (about 0.7 s of encoder time for whisper base on 2 cores).
CTranslate2's encoder accepts shorter inputs, so with ``window="fit"`` the features are padded only to the
utterance plus ``window_padding_s`` of silence, rounded up to whole seconds (at least ``min_window_s``), and the
encoder and greedy/beam decoder run directly on CTranslate2 — the same idea as whisper.cpp's ``audio_ctx``. The
encoder cost then grows with the utterance (about 10x less for a 3 s question); scripts/bench_stt.py measures the
word error rate of both windows on the same held-out utterances. ``window="full"`` keeps faster-whisper's own path.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import Any, Literal

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
FRAMES_PER_SECOND = 100  # Whisper's log-mel features: one frame per 10 ms
FULL_WINDOW_FRAMES = 3000  # 30 s, what the model was trained on
# faster-whisper's rule for "nothing was said": a likely no-speech token and a low average log-probability.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0


def window_frames(feature_frames: int, *, padding_s: float, min_window_s: float) -> int:
    """The encoder window for an utterance of ``feature_frames`` frames: the audio plus ``padding_s`` of silence,
    rounded up to whole seconds, at least ``min_window_s``, at most 30 s (pure: unit-tested)."""
    seconds = math.ceil((feature_frames + padding_s * FRAMES_PER_SECOND) / FRAMES_PER_SECOND)
    return int(min(max(seconds, min_window_s), FULL_WINDOW_FRAMES / FRAMES_PER_SECOND) * FRAMES_PER_SECOND)


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
                 timeout_s: float = 30.0, retries: int = 0, initial_prompt: str | None = None,
                 window: Literal["fit", "full"] = "fit", window_padding_s: float = 6.0, min_window_s: float = 8.0,
                 pad_with: Literal["audio", "features"] = "audio"):
        super().__init__(timeout_s=timeout_s, retries=retries, language=language, metrics=metrics)
        if threads < 1 or workers < 1 or beam_size < 1:
            raise ValueError("threads, workers and beam_size must be at least 1")
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.workers = workers
        self.beam_size = beam_size
        self.compute_type = compute_type
        self.initial_prompt = initial_prompt
        if window not in ("fit", "full") or window_padding_s < 0 or not 1 <= min_window_s <= 30:
            raise ValueError("window must be 'fit' or 'full', window_padding_s >= 0, min_window_s from 1 to 30")
        self.window = window
        self.window_padding_s = window_padding_s
        self.min_window_s = min_window_s
        self.pad_with = pad_with  # "features": zeros after the features, as faster-whisper pads its 30 s window
        self.gate = EngineGate("stt", workers, self.metrics)
        self._decoding: Any = None  # (tokenizer, suppressed tokens) for the fitted-window path, built once
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
        duration_ms = len(pcm16) / 2 / SAMPLE_RATE * 1000
        if self.window == "fit" and self.initial_prompt is None:
            fitted = self._run_fitted(model, audio, language)
            if fitted is not None:
                text, details = fitted
                return TranscriptResult(text=text, language=language, duration_ms=duration_ms, details=details)
        segments, info = model.transcribe(
            audio, language=language, beam_size=self.beam_size, best_of=self.beam_size,
            without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
            initial_prompt=self.initial_prompt,
        )
        parts = [segment.text for segment in segments]  # the decode happens here, during iteration
        text = "".join(parts).strip()
        return TranscriptResult(
            text=text, language=getattr(info, "language", language), duration_ms=duration_ms,
            details={"language_probability": getattr(info, "language_probability", None), "segments": len(parts),
                     "window_s": FULL_WINDOW_FRAMES / FRAMES_PER_SECOND},
        )

    def _run_fitted(self, model: Any, audio: Any, language: str | None) -> tuple[str, dict[str, Any]] | None:
        """Encode a window fitted to the utterance and decode it on CTranslate2 directly (see the module notes).
        None when the utterance does not fit one window or no language is set (faster-whisper's path then)."""
        import ctranslate2
        import numpy as np
        from faster_whisper.audio import pad_or_trim

        if language is None:
            return None  # language detection needs faster-whisper's own path
        hop = model.feature_extractor.hop_length
        frames = len(audio) // hop
        if frames > FULL_WINDOW_FRAMES:
            return None
        window = window_frames(frames, padding_s=self.window_padding_s, min_window_s=self.min_window_s)
        # Pad the audio (not the features) with silence up to the window, as Whisper's training data was padded:
        # the model then reads the rest of the window as the silence it is, and stops.
        padding = window * hop - len(audio) + hop if self.pad_with == "audio" else hop
        features = model.feature_extractor(audio, padding=padding)
        tokenizer, suppressed = self._decoding_for(model, language)
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(pad_or_trim(features, window)[None],
                                                                      dtype=np.float32))
        encoded = model.model.encode(view, to_cpu=False)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        # A person says at most about 5 tokens a second; the bound also stops a hallucination loop on noise.
        max_length = min(len(prompt) + 16 + int(frames / FRAMES_PER_SECOND * 8), 448)
        result = model.model.generate(encoded, [prompt], beam_size=self.beam_size, patience=1.0,
                                      length_penalty=1.0, max_length=max_length, return_scores=True,
                                      return_no_speech_prob=True, suppress_blank=True, suppress_tokens=suppressed)[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        # As faster-whisper computes it: CTranslate2's score is the sum normalised by length ** length_penalty.
        avg_logprob = (result.scores[0] * len(tokens) / (len(tokens) + 1)) if result.scores else 0.0
        details = {"window_s": window / FRAMES_PER_SECOND, "no_speech_prob": round(result.no_speech_prob, 3),
                   "avg_logprob": round(avg_logprob, 3)}
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD:
            return "", details
        return tokenizer.decode(tokens).strip(), details

    def _decoding_for(self, model: Any, language: str) -> tuple[Any, Any]:
        if self._decoding is None or self._decoding[0].language_code != language:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                  language=language)
            self._decoding = (tokenizer, get_suppressed_tokens(tokenizer, [-1]))
        return self._decoding

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

"""Local text-to-speech with Piper (onnxruntime), streamed one sentence at a time.

Piper's ``PiperVoice.synthesize`` is a generator yielding one chunk per sentence; it is consumed inside a worker
thread through :func:`iterate_in_thread`, so the event loop never runs the model, and a consumer that goes away
(barge-in) stops the generator after the sentence in progress. onnxruntime sessions may be run from several threads
at once, so one loaded voice serves ``concurrency`` phrases in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..audio.format import AudioChunk
from ..engines import EngineGate, ProviderError, iterate_in_thread
from ..logs import get_logger
from ..metrics import Metrics
from .base import TextToSpeech, TtsCapabilities

log = get_logger("TTS")

MIN_SPEED, MAX_SPEED = 0.25, 4.0


class _ArenaReleasingSession:
    """An onnxruntime session whose every run hands its CPU arena memory back afterwards.

    onnxruntime's CPU arena grows to the largest input it has seen and keeps that memory: a longer sentence than any
    before added 84 MiB to the process at once (400 syntheses of 2 to 40 words, measured in-process), and the soak's
    RSS climbed in such steps. With arena shrinkage after each run the same loop stays within 250 to 400 MiB, and the
    first audio of a phrase took the same time (113 against 116 ms median, 60 phrases each, alternating).
    """

    def __init__(self, session: Any, onnxruntime: Any):
        self._session = session
        self._run_options = onnxruntime.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, output_names: Any, feeds: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, feeds, run_options or self._run_options)

    def __getattr__(self, name: str) -> Any:  # the rest of the session's API, unchanged
        return getattr(self._session, name)


class PiperTTS(TextToSpeech):
    """A Piper voice from an ``.onnx`` model and its ``.onnx.json`` config.

    ``speaker`` picks the default speaker of a multi-speaker voice (a name from the config's ``speaker_id_map`` or
    an id); a single-speaker voice answers to its own name (for example ``"joe"``). ``speed`` 2.0 speaks twice as
    fast: it divides the voice's ``length_scale``. ``threads`` sets onnxruntime's intra-op threads per call (None:
    onnxruntime's default). ``noise_scale`` / ``noise_w_scale`` override the voice's sampling noise (None: the
    voice config's); both 0 make synthesis deterministic, which tests and benchmarks use. ``release_arena``
    (default on) returns onnxruntime's arena memory after each phrase (see :class:`_ArenaReleasingSession`).
    """

    provider = "piper"

    def __init__(self, model_path: Path | str, config_path: Path | str | None = None, *,
                 speaker: int | str | None = None, speed: float = 1.0, concurrency: int = 2,
                 threads: int | None = None, noise_scale: float | None = None, noise_w_scale: float | None = None,
                 metrics: Metrics | None = None, timeout_s: float = 30.0, retries: int = 0,
                 release_arena: bool = True):
        super().__init__(voice=None if speaker is None else str(speaker), speed=speed, timeout_s=timeout_s,
                         retries=retries, metrics=metrics)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.model_path = Path(model_path)
        self.config_path = Path(config_path) if config_path else Path(f"{self.model_path}.json")
        if not self.config_path.is_file():
            raise ProviderError("model_missing", f"Piper voice config not found: {self.config_path} "
                                "(run `voiceserver models fetch`)", provider=self.provider)
        config = json.loads(self.config_path.read_text(encoding="utf-8"))
        self.voice_name = str(config.get("dataset") or self.model_path.name.split(".")[0])
        self.speaker_id_map: dict[str, int] = {str(k): int(v) for k, v in (config.get("speaker_id_map") or {}).items()}
        self.num_speakers = int(config.get("num_speakers", 1))
        self.base_length_scale = float((config.get("inference") or {}).get("length_scale", 1.0))
        voices = tuple(self.speaker_id_map) if self.speaker_id_map else (self.voice_name,)
        self.capabilities = TtsCapabilities(streaming=True, sample_rate=int(config["audio"]["sample_rate"]),
                                            voices=voices)
        self.threads = threads
        self.noise_scale = noise_scale
        self.noise_w_scale = noise_w_scale
        self.release_arena = release_arena
        self.gate = EngineGate("tts", concurrency, self.metrics)
        self._voice: Any = None
        self._load_lock = threading.Lock()
        self._async_load_lock: asyncio.Lock | None = None
        self.speaker_id(self.voice)  # fail at construction on a speaker the voice does not have

    @property
    def loaded(self) -> bool:
        return self._voice is not None

    def speaker_id(self, voice: str | None) -> int | None:
        """The Piper speaker id for a voice name or id; raises ProviderError for a voice this model lacks."""
        if voice is None or voice == "":
            return None
        if self.speaker_id_map:
            if voice in self.speaker_id_map:
                return self.speaker_id_map[voice]
            if voice.isdigit() and int(voice) < self.num_speakers:
                return int(voice)
        elif voice in (self.voice_name, self.model_path.name.split(".")[0], "0"):
            return None
        raise ProviderError("tts_invalid_voice", f"Piper voice {self.voice_name!r} has no speaker {voice!r}; "
                            f"available: {', '.join(self.capabilities.voices)}", provider=self.provider)

    def _load_sync(self) -> Any:
        with self._load_lock:
            if self._voice is None:
                if not self.model_path.is_file():
                    raise ProviderError("model_missing", f"Piper voice not found: {self.model_path} "
                                        "(run `voiceserver models fetch`)", provider=self.provider)
                try:
                    import onnxruntime
                    from piper.config import PiperConfig
                    from piper.voice import PiperVoice
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise ProviderError("not_installed", "piper-tts is not installed: "
                                        "pip install 'voiceserver[local]'", provider=self.provider) from exc
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = self.threads or 0  # 0: one per core
                options.inter_op_num_threads = 1
                # onnxruntime's worker threads spin-wait for more work after each run by default; on a small
                # machine that burns the CPU faster-whisper and llama.cpp need in the same seconds.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.add_session_config_entry("session.inter_op.allow_spinning", "0")
                config = json.loads(self.config_path.read_text(encoding="utf-8"))
                session = onnxruntime.InferenceSession(str(self.model_path), sess_options=options,
                                                       providers=["CPUExecutionProvider"])
                if self.release_arena:
                    session = _ArenaReleasingSession(session, onnxruntime)
                self._voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))
                self.metrics.engines_loaded.labels("tts").set(1)
                log.info(f"loaded Piper voice {self.voice_name} ({self.capabilities.sample_rate} Hz)")
            return self._voice

    async def load(self) -> None:
        """Load the voice in a worker thread (idempotent; concurrent callers share one load)."""
        if self._voice is not None:
            return
        if self._async_load_lock is None:
            self._async_load_lock = asyncio.Lock()
        async with self._async_load_lock:
            if self._voice is None:
                await asyncio.to_thread(self._load_sync)

    async def warmup(self) -> None:
        """Load and synthesise one word, so the first phrase does not pay for espeak's start-up."""
        async for _ in self.synthesize("Hello."):
            pass

    async def _synthesize(self, text: str, voice: str | None, speed: float) -> AsyncIterator[AudioChunk]:
        from piper.config import SynthesisConfig

        speaker = self.speaker_id(voice)
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ProviderError("tts_invalid_speed", f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}",
                                provider=self.provider)
        if self._voice is None:
            await self.load()
        piper_voice = self._voice
        rate = self.capabilities.sample_rate
        syn_config = SynthesisConfig(speaker_id=speaker, length_scale=self.base_length_scale / speed,
                                     noise_scale=self.noise_scale, noise_w_scale=self.noise_w_scale)

        def produce(emit: Any) -> None:
            # Runs in the worker thread: the generator is consumed here, one ONNX run per sentence.
            for piece in piper_voice.synthesize(text, syn_config=syn_config):
                if not emit(AudioChunk(piece.audio_int16_bytes, rate)):
                    return  # the consumer went away (barge-in): stop before the next sentence

        async with contextlib.aclosing(iterate_in_thread(self.gate, produce, maxsize=4)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def close(self) -> None:
        self._voice = None
        self.metrics.engines_loaded.labels("tts").set(0)

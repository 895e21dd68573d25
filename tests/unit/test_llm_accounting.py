"""Usage with cached tokens, token counting, sampling settings and the live marks of STT and TTS (no model loaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from openai.types.chat import ChatCompletionChunk

from voiceserver.audio.format import AudioChunk
from voiceserver.engines import LiveActivity, ProviderError
from voiceserver.llm import LlamaCppModel, ModelContext, ModelRegistry
from voiceserver.llm.base import ChatModel, Usage
from voiceserver.llm.openai_compatible import usage_of
from voiceserver.llm.registry import local_model_names
from voiceserver.llm.sampling import NgramBlocker, Sampling
from voiceserver.settings import Settings, SettingsError, load_settings
from voiceserver.stt.base import SpeechToText, TranscriptResult
from voiceserver.tts.base import TextToSpeech


def usage_chunk(usage: dict) -> ChatCompletionChunk:
    """A streamed usage chunk as OpenAI documents it (empty choices), parsed by the official SDK."""
    return ChatCompletionChunk.model_validate({"id": "c", "object": "chat.completion.chunk", "created": 1,
                                               "model": "gpt-4o-mini", "choices": [], "usage": usage})


def test_cached_prompt_tokens_come_from_the_usage_details():
    chunk = usage_chunk({"prompt_tokens": 1200, "completion_tokens": 12, "total_tokens": 1212,
                         "prompt_tokens_details": {"cached_tokens": 1024}})
    assert usage_of(chunk.usage) == Usage(prompt_tokens=1200, completion_tokens=12, cached_tokens=1024)
    plain = usage_chunk({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10})
    assert usage_of(plain.usage) == Usage(7, 3, 0)  # a server that does not send the details


def test_usage_adds_cached_tokens_and_keeps_the_whole_prompt():
    total = Usage(100, 10, 90)
    total.add(Usage(120, 5, 110))
    assert (total.prompt_tokens, total.completion_tokens, total.cached_tokens, total.total_tokens) == \
        (220, 15, 200, 235)


def test_the_base_estimates_four_characters_a_token():
    model = ChatModel("test/estimate")
    assert [model.count_tokens(t) for t in ("", "abc", "abcd", "abcde", "x" * 400)] == [0, 1, 1, 2, 100]


async def test_local_count_before_the_file_exists_is_the_fetch_error():
    model = LlamaCppModel(Path("/nonexistent.gguf"))
    with pytest.raises(ProviderError) as err:
        await model.count_tokens_async("hello")
    assert err.value.code == "model_missing"
    assert model.count_tokens("") == 0


def test_ngram_blocker_forbids_only_the_token_that_would_copy_an_earlier_reply():
    earlier = [[5, 6, 7, 8, 9]]
    blocker = NgramBlocker(earlier, n=3, prompt_length=10)
    prompt = list(range(100, 110))
    scores = np.zeros(20, dtype=np.float32)
    blocker(np.array(prompt + [6]), scores)  # one generated token: not yet n - 1
    assert np.isfinite(scores).all()
    blocker(np.array(prompt + [6, 7]), scores)  # "6 7" was followed by 8 in the earlier reply
    assert scores[8] == -np.inf and np.isfinite(np.delete(scores, 8)).all() and blocker.blocked == 1
    fresh = np.zeros(20, dtype=np.float32)
    blocker(np.array(prompt + [7, 6]), fresh)  # "7 6" never occurred
    assert np.isfinite(fresh).all()


def test_sampling_settings_are_validated_and_reach_the_local_model(models_dir):
    with pytest.raises(ValueError):
        Sampling(no_repeat_ngram=1)
    with pytest.raises(ValueError):
        Sampling(top_p=0.0)
    with pytest.raises(SettingsError, match="no_repeat_ngram"):
        load_settings(None, {"llm": {"no_repeat_ngram": 1}})
    settings = Settings(models_dir=models_dir, llm={"temperature": 0.2, "top_p": 0.8, "top_k": 20, "min_p": 0.1,
                                                    "repeat_penalty": 1.2, "repeat_last_n": 128,
                                                    "frequency_penalty": 0.1, "presence_penalty": 0.2,
                                                    "no_repeat_ngram": 6})
    activity = LiveActivity()
    model = ModelRegistry(ModelContext.from_settings(settings, live_activity=activity)).resolve("local/smollm2")
    assert isinstance(model, LlamaCppModel) and model.live_activity is activity
    assert model.sampling == Sampling(temperature=0.2, top_p=0.8, top_k=20, min_p=0.1, repeat_penalty=1.2,
                                      repeat_last_n=128, frequency_penalty=0.1, presence_penalty=0.2,
                                      no_repeat_ngram=6)
    assert model.sampling.with_temperature(0.7).temperature == 0.7 and model.sampling.with_temperature(None) is \
        model.sampling


def test_local_model_names_map_model_strings_to_manifest_entries():
    specs = ["local/smollm2", "openai/gpt-4o", "local/qwen2.5-coder-0.5b", "local/smollm2", "local/unknown", 3]
    assert local_model_names(specs) == ["smollm2", "qwen2.5-coder-0.5b"]


class RecordingSTT(SpeechToText):
    def __init__(self, activity: LiveActivity):
        super().__init__()
        self.live_activity = activity
        self.busy_inside: list[bool] = []

    async def _transcribe(self, audio: bytes, language: str | None) -> TranscriptResult:
        self.busy_inside.append(self.live_activity.busy)
        return TranscriptResult(text="hello")


class RecordingTTS(TextToSpeech):
    def __init__(self, activity: LiveActivity):
        super().__init__()
        self.live_activity = activity
        self.busy_inside: list[bool] = []

    async def _synthesize(self, text, voice, speed):
        self.busy_inside.append(self.live_activity.busy)
        yield AudioChunk(b"\x00\x00" * 160, 16000)


async def test_transcription_and_synthesis_count_as_live_work():
    activity = LiveActivity()
    stt, tts = RecordingSTT(activity), RecordingTTS(activity)
    assert (await stt.transcribe(AudioChunk(b"\x00\x00" * 1600, 16000))).text == "hello"
    assert [c async for c in tts.synthesize("Hi there.")]
    assert stt.busy_inside == [True] and tts.busy_inside == [True]
    assert not activity.busy and activity.started == 2

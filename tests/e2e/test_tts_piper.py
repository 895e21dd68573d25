"""Piper with the real joe voice: streaming by sentence, cancellation, speed, speakers."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys

import pytest
import pytest_asyncio

from voiceserver.audio import rms_dbfs
from voiceserver.engines import ProviderError
from voiceserver.testing.loop import LoopTicker
from voiceserver.tts.piper import PiperTTS

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

TWO_SENTENCES = "The weather in London is mild today. Tomorrow it will rain in the afternoon."
TEN_SENTENCES = " ".join(f"This is sentence number {n}." for n in
                         ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def piper(models_dir):
    tts = PiperTTS(models_dir / "piper" / "en_US-joe-medium.onnx", concurrency=2)
    await tts.load()
    return tts


class CountingVoice:
    """Wraps the loaded PiperVoice to count the sentences it actually synthesised."""

    def __init__(self, inner):
        self.inner = inner
        self.sentences = 0

    def synthesize(self, text, syn_config=None):
        for piece in self.inner.synthesize(text, syn_config=syn_config):
            self.sentences += 1
            yield piece


@contextlib.contextmanager
def counting(tts: PiperTTS):
    original = tts._voice
    wrapper = CountingVoice(original)
    tts._voice = wrapper
    try:
        yield wrapper
    finally:
        tts._voice = original


async def test_capabilities_come_from_the_voice_config(piper):
    assert piper.sample_rate == 22050
    assert piper.capabilities.voices == ("joe",)
    assert await piper.get_speakers() == [{"voice_id": "joe", "name": "joe"}]


async def test_two_sentences_stream_in_more_than_one_chunk(piper):
    chunks = [c async for c in piper.synthesize(TWO_SENTENCES)]
    assert len(chunks) >= 2
    for chunk in chunks:
        assert chunk.sample_rate == 22050 and chunk.encoding == "pcm16"
        assert len(chunk.audio) % 2 == 0
        assert rms_dbfs(chunk.audio) > -35  # speech, not silence
    assert 2000 < sum(c.duration_ms for c in chunks) < 12000


async def wait_slot_free(piper) -> None:
    """The worker thread finishes its current sentence, then frees the engine slot (bounded wait)."""
    for _ in range(500):
        if piper.gate.busy == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the engine slot was never freed")


async def test_cancelling_mid_stream_stops_synthesis_and_frees_the_slot(piper):
    with counting(piper) as counter:
        stream = piper.synthesize(TEN_SENTENCES)
        first = await anext(stream)
        assert first.audio
        await stream.aclose()  # returns at once; the slot is freed when the worker thread has stopped
        await wait_slot_free(piper)
        stopped_at = counter.sentences
        await asyncio.sleep(0.2)
        assert counter.sentences == stopped_at
    # The bounded queue (4) means at most 1 taken + 4 queued + 1 waiting were made, never all ten.
    assert stopped_at <= 6 < 10
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    # The engine still works after a cancellation.
    assert [c async for c in piper.synthesize("Still here.")]


async def test_task_cancellation_mid_stream(piper):
    """A consumer task cancelled while it holds the stream (barge-in). The consumer closes the stream with
    ``aclosing``: an ``async for`` alone leaves a suspended generator for the garbage collector to close later."""
    got = []
    consumer_started = asyncio.Event()

    async def consume():
        async with contextlib.aclosing(piper.synthesize(TEN_SENTENCES)) as stream:
            async for chunk in stream:
                got.append(chunk)
                consumer_started.set()
                await asyncio.sleep(10)  # a slow consumer, as when audio is paced to real time

    with counting(piper) as counter:
        task = asyncio.create_task(consume())
        await consumer_started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_slot_free(piper)
        assert counter.sentences < 10
    assert len(got) == 1


async def test_speed_changes_the_length(piper):
    async def duration(speed: float) -> float:
        return sum([c.duration_ms async for c in piper.synthesize(TWO_SENTENCES, speed=speed)])

    normal, fast, slow = await duration(1.0), await duration(2.0), await duration(0.5)
    assert fast < normal * 0.7
    assert slow > normal * 1.5


async def test_speaker_names_are_checked(piper, models_dir):
    assert [c async for c in piper.synthesize("Hi.", voice="joe")]
    with pytest.raises(ProviderError) as info:
        [c async for c in piper.synthesize("Hi.", voice="alloy")]
    assert info.value.code == "tts_invalid_voice"
    with pytest.raises(ProviderError):
        PiperTTS(models_dir / "piper" / "en_US-joe-medium.onnx", speaker="nobody")


async def test_bad_speed_and_missing_model(piper, tmp_path, models_dir):
    with pytest.raises(ProviderError) as info:
        [c async for c in piper.synthesize("Hi.", speed=10.0)]
    assert info.value.code == "tts_invalid_speed"
    with pytest.raises(ProviderError) as info:
        PiperTTS(tmp_path / "missing.onnx")
    assert info.value.code == "model_missing"
    # A config without its model loads lazily and fails with the same code.
    config = tmp_path / "voice.onnx.json"
    config.write_bytes((models_dir / "piper" / "en_US-joe-medium.onnx.json").read_bytes())
    with pytest.raises(ProviderError) as info:
        [c async for c in PiperTTS(tmp_path / "voice.onnx").synthesize("Hi.")]
    assert info.value.code == "model_missing"


async def test_parallel_phrases_and_a_responsive_loop(piper):
    async def speak(text):
        return [c async for c in piper.synthesize(text)]

    async with LoopTicker() as ticker:
        results = await asyncio.gather(speak(TWO_SENTENCES), speak("And a second phrase, in parallel."))
    ticks = ticker.ticks
    assert all(results)
    assert ticks >= 10  # the loop kept running while both phrases were synthesised in threads
    assert piper.gate.busy == 0


ARENA_PROBE = """
import asyncio, sys
from voiceserver.tts.piper import PiperTTS

def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

async def main(model, release):
    tts = PiperTTS(model, release_arena=release, noise_scale=0, noise_w_scale=0)
    async for _ in tts.synthesize("Hello."):
        pass
    before = rss_mib()
    async for _ in tts.synthesize("The quick brown fox jumps over the lazy dog " * 8 + "at last."):
        pass
    print(rss_mib() - before)

asyncio.run(main(sys.argv[1], sys.argv[2] == "release"))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc")
def test_a_long_sentence_does_not_leave_its_arena_memory_behind(models_dir):
    """onnxruntime keeps the arena a long input grew; with release_arena (the default) it is handed back, so one
    long sentence does not add hundreds of MiB to the server for good. Each case runs in its own process."""
    model = str(models_dir / "piper" / "en_US-joe-medium.onnx")

    def growth_mib(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", ARENA_PROBE, model, mode], capture_output=True, text=True,
                             timeout=120, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    kept, released = growth_mib("keep"), growth_mib("release")
    assert released < 50, f"a long sentence left {released:.0f} MiB behind with release_arena on"
    assert released < kept / 4, f"kept {kept:.0f} MiB vs released {released:.0f} MiB: the probe did not grow the arena"

"""LanceDB on S3 (moto's server on 127.0.0.1): two OS processes share one caller's memory, and concurrent writers
from two processes lose nothing (LanceDB commits with conditional puts)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from voiceserver.testing.processes import moto_s3

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, {repo!r})
    from voiceserver.memory import LanceDBStore, Memory, Message

    async def main(uri, options, models_dir, mode, tag, turns):
        store = LanceDBStore(uri, storage_options=json.loads(options), compact_every=6)
        memory = Memory(store, embedder="wordllama", models_dir=models_dir,
                        options={{"last_messages": 4, "semantic_recall": {{"top_k": 1, "message_range": 0}}}})
        if mode == "write":
            for i in range(turns):
                await memory.save_messages([
                    Message("user", f"{{tag}} question {{i}}", f"{{tag}}-call", "caller-1"),
                    Message("assistant", f"{{tag}} answer {{i}}", f"{{tag}}-call", "caller-1")])
        elif mode == "tell":
            await memory.save_messages([Message("user", "My favorite color is blue.", "first-call", "caller-1")])
        else:
            context = await memory.prepare(resource_id="caller-1", thread_id="second-call",
                                           query="what colour do I like")
            counts = {{t: (await memory.recall(f"{{t}}-call", "caller-1")).total for t in ("a", "b")}}
            print(json.dumps({{"recalled": [m.content for m in context.recalled], "counts": counts,
                              "threads": (await memory.list_threads("caller-1")).total}}))
        await memory.close()

    asyncio.run(main(*sys.argv[1:6], int(sys.argv[6])))
""")


@pytest.fixture
def s3():
    with moto_s3("voice-memory") as options:
        yield options


async def run(uri: str, options: dict, models_dir: Path, mode: str, tag: str = "-", turns: int = 0):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT.format(repo=str(REPO)), uri, json.dumps(options), str(models_dir), mode, tag,
        str(turns), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    async with asyncio.timeout(240):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


async def test_two_processes_share_one_callers_memory_on_s3(s3, models_dir):
    uri = "s3://voice-memory/memory"
    # Two writer processes at the same time, appending to the same tables.
    await asyncio.gather(run(uri, s3, models_dir, "write", "a", 10), run(uri, s3, models_dir, "write", "b", 10))
    # One process hears a fact; a different process recalls it in a new call.
    await run(uri, s3, models_dir, "tell")
    result = json.loads((await run(uri, s3, models_dir, "recall")).strip().splitlines()[-1])
    assert result["recalled"] == ["My favorite color is blue."]
    assert result["counts"] == {"a": 20, "b": 20}
    assert result["threads"] == 4  # a-call, b-call, first-call, second-call

"""A WebRTC caller in its own process, for the vanished-peer test: it connects, asks for a long reply, prints
"ready <session_id> <thread>" once reply audio flows, and waits to be killed (SIGKILL: it never says goodbye)."""

import asyncio
import sys

from voiceserver.testing.webrtc_caller import WebRtcCaller


async def main(url: str, resource: str) -> None:
    async with WebRtcCaller.connect(url, resource=resource) as caller:
        await caller.send_text("tell me the alphabet")
        await caller.wait_for("response.audio.started", 20)
        await asyncio.sleep(0.5)
        print("ready", caller.session_id, caller.session["thread"], flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

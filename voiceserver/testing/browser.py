"""A real Chromium for page tests: Debian's ``/usr/bin/chromium`` driven by Playwright (never ``playwright install``,
which downloads a browser), with a fake microphone that plays a WAV file in a loop.

    async with async_playwright() as p, chromium(p, tmp_path, microphone=wav) as browser:
        page = await browser.new_page()

Flags: headless, no sandbox (CI runs as root), no GPU, no QUIC, and no background networking, component updates
or sync (a closed network refuses those connections and Chromium then stalls). ``microphone`` feeds
``--use-file-for-fake-audio-capture`` (without it the fake device beeps) and the permission is granted;
``deny_microphone`` makes getUserMedia fail as when a person clicks "Block".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("VOICESERVER_CHROMIUM", "/usr/bin/chromium")
# Playwright adds --headless itself (headless=True below).
BASE_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-default-apps", "--autoplay-policy=no-user-gesture-required"]


@contextlib.asynccontextmanager
async def chromium(playwright: Any, profile_dir: Path, *, microphone: Path | None = None,
                   deny_microphone: bool = False, viewport: dict[str, int] | None = None,
                   **context_options: Any) -> AsyncIterator[Any]:
    """A fresh Chromium profile in ``profile_dir`` (a persistent context: Playwright forbids ``--user-data-dir`` in
    plain ``launch``). Yields the browser context."""
    flags = [*BASE_FLAGS, "--use-fake-device-for-media-stream"]
    if deny_microphone:
        flags.append("--deny-permission-prompts")
    else:
        flags.append("--use-fake-ui-for-media-stream")  # the permission prompt is accepted
        if microphone is not None:  # else Chromium's fake device plays its own beeps
            flags.append(f"--use-file-for-fake-audio-capture={microphone}")
    context = await playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=CHROMIUM, headless=True, args=flags,
        viewport=viewport or {"width": 900, "height": 760}, **context_options)
    try:
        yield context
    finally:
        await context.close()

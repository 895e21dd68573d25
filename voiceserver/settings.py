"""Settings: environment variables, an optional YAML/JSON file, and command-line flags.

This is the only module that reads ``os.environ``. Precedence, highest first: command-line flags (passed as
``overrides``), environment variables, the ``--config`` file, the defaults below.

Names users already know are honoured as-is (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``GOOGLE_AI_API_KEY``,
``VOICE_PROVIDER``, ``VOICE_QUALITY``, ``LANCEDB_URI``); everything else is ``VOICESERVER_<FIELD>``, with ``__``
separating nested fields (``VOICESERVER_STT__THREADS=2``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

LogLevel = Literal["debug", "info", "warn", "error", "silent"]
LogFormat = Literal["json", "pretty"]
Provider = Literal["local", "openai"]
Quality = Literal["low", "medium", "high"]


class SettingsError(Exception):
    """A configuration problem, reported as one readable line at start-up."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VoiceConfig(_Section):
    """Which voice an agent speaks with."""

    provider: Provider | list[Provider] | None = Field(
        None, description="local (Piper) or openai, or a list tried in order (fallback); default: the server's "
                          "text-to-speech (tts.provider, VOICE_PROVIDER)")
    voice: str | None = Field(None, description="Piper voice or OpenAI voice name")
    speed: float = Field(1.0, ge=0.25, le=4.0)


class MemoryConfig(_Section):
    """Where an agent keeps its memory."""

    type: Literal["lancedb", "none"] = "lancedb"
    url: str | None = Field(None, description="LanceDB URI; default LANCEDB_URI")
    embedder: str = "wordllama"
    # 20, not Mastra's 10: the prompt window is cut back to half each time memory's window slides past its start,
    # and each cut re-reads the prompt; with 10 that was every third turn. The prompt budget still bounds it.
    last_messages: int = Field(20, ge=0, le=1000, description="recent messages of the thread offered to the prompt "
                                                              "(the prompt budget may send fewer)")
    semantic_recall: bool = True
    # 1 with whole exchanges, not 2 with neighbours: the same recall in half the tokens; with 2, a returning
    # caller's third call answered 43% slower than their first, with 1 5% (scripts/bench_conversation.py).
    recall_top_k: int = Field(1, ge=1, le=50, description="semantically recalled messages from the caller's "
                                                          "earlier messages (each with its exchange); was 2, then 3")
    recall_message_range: int = Field(1, ge=0, le=20, description="neighbours before and after a recalled message")
    recall_threshold: float | None = Field(0.3, ge=-1.0, le=1.0, description="minimum cosine similarity of a "
                                                                            "recalled message; null keeps every hit")
    recall_exchange: bool = Field(True, description="each recalled message comes with the other half of its "
                                                    "exchange (a question with its reply, a reply with its question) "
                                                    "instead of recall_message_range neighbours")
    working_memory: bool = True
    working_memory_scope: Literal["thread", "resource"] = "resource"
    working_memory_extract: bool | None = Field(
        None, description="fill working memory after each turn with structured output instead of a tool call; "
                          "default: on for local/ models, which do not call tools reliably")


class AgentConfig(_Section):
    """An agent declared in the settings file."""

    name: str = "Assistant"
    description: str = ""
    instructions: str = (
        "You are a friendly voice assistant talking with a person. Answer in one to three short spoken sentences, "
        "unless they ask for a story or more detail. Speak plainly: no lists, markdown or emoji. When the person "
        "tells you something about themselves, acknowledge it in your own words. When they ask about themselves, "
        "answer from what they told you, speaking to them as you."
    )
    # Qwen2.5-Coder-0.5B, not SmolLM2-135M: it recalls what the caller said and answers the question asked;
    # SmolLM2 is faster and still selectable (docs/models.md has the figures).
    model: str | list[str] = "local/qwen2.5-coder-0.5b"
    tools: list[str] = Field(default_factory=list, description="import paths 'package.module:object'")
    workflows: list[str] = Field(default_factory=list, description="import paths 'package.module:object'")
    agents: list[str] = Field(default_factory=list, description="names of other configured agents used as sub-agents")
    network: bool = Field(False, description="in voice sessions, route each request over the agent's agents, "
                                             "workflows and tools (agent network; needs memory)")
    prompt_budget_tokens: int = Field(
        1024, ge=0, le=1_000_000,
        description="tokens of a turn's prompt: history and recall are cut to fit (recall first, then the oldest "
                    "history); the default fits the local model's 2048-token context with room for the reply; "
                    "0 = no budget")
    warm_next_prompt: bool = Field(
        True, description="after each turn with memory, the local model reads the next prompt's start (and makes a "
                          "due history cut) while the caller listens, so the next turn reads only what is new")
    voice: VoiceConfig = Field(default_factory=VoiceConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)


class SttConfig(_Section):
    """Speech-to-text engine."""

    provider: Provider | list[Provider] | None = Field(
        None, description="local or openai, or a list tried in order (fallback); default follows VOICE_PROVIDER")
    model: str | None = Field(None, description="local: whisper-base; openai: whisper-1 or gpt-4o-transcribe")
    language: str | None = "en"
    threads: int = Field(2, ge=1, le=64)
    workers: int = Field(1, ge=1, le=16, description="parallel local transcriptions")
    beam_size: int = Field(1, ge=1, le=10)
    window: Literal["fit", "full"] = Field(
        "fit", description="local: fit Whisper's encoder window to the utterance (fast) or always use 30 s")
    window_padding_s: float = Field(
        6.0, ge=0.0, le=30.0, description="silence after the utterance in a fitted window (less raises the word "
                                          "error rate: scripts/bench_stt.py)")
    min_window_s: float = Field(8.0, ge=1.0, le=30.0, description="the smallest fitted window")
    timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(1, ge=0, le=5)


class TtsConfig(_Section):
    """Text-to-speech engine."""

    provider: Provider | list[Provider] | None = Field(
        None, description="local or openai, or a list tried in order (fallback); default follows VOICE_PROVIDER")
    voice: str | None = None
    model: str = Field("tts-1", description="OpenAI TTS model")
    max_concurrency: int = Field(2, ge=1, le=64)
    timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(1, ge=0, le=5)


class LlmConfig(_Section):
    """Chat model engine settings (the model string itself is on the agent)."""

    threads: int = Field(2, ge=1, le=64)
    context: int = Field(2048, ge=256, le=131072)
    pool: int = Field(2, ge=1, le=8, description="local llama.cpp contexts: one keeps the conversation prompt "
                                                 "cached while another serves side tasks (memory extraction)")
    max_tokens: int = Field(160, ge=1, le=32768)
    temperature: float = Field(0.3, ge=0.0, le=2.0)
    # Sampling of the local model (llama.cpp); defaults chosen from scripts/eval_models.py, see docs/models.md.
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="nucleus sampling: keep the likeliest tokens up to p")
    top_k: int = Field(40, ge=0, le=1000, description="keep the k likeliest tokens (0: all)")
    min_p: float = Field(0.05, ge=0.0, lt=1.0, description="drop tokens below min_p x the likeliest one's p")
    repeat_penalty: float = Field(1.1, gt=0.0, le=3.0, description="llama.cpp repetition penalty on the tokens "
                                                                   "generated in the last repeat_last_n")
    repeat_last_n: int = Field(64, ge=0, le=4096, description="window of the repetition penalties, in tokens")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    no_repeat_ngram: int = Field(0, ge=0, le=64, description="0: off; n >= 2: the local model never copies a run "
                                                             "of n tokens from an earlier reply of the conversation")
    timeout_s: float = Field(60.0, gt=0)
    openai_compatible_base_url: str | None = None
    openai_compatible_api_key: SecretStr | None = None

    @field_validator("no_repeat_ngram")
    @classmethod
    def _ngram_off_or_two(cls, value: int) -> int:
        if value == 1:
            raise ValueError("no_repeat_ngram must be 0 (off) or at least 2 (1 would forbid every earlier token)")
        return value


class LimitsConfig(_Section):
    """Every limit the server enforces, in one place."""

    max_sessions: int = Field(1000, ge=1)
    max_frame_bytes: int = Field(65536, ge=1024)
    max_text_chars: int = Field(4000, ge=1)
    max_utterance_s: float = Field(30.0, gt=0, le=300)
    max_reply_chars: int = Field(2000, ge=1)
    max_turn_s: float = Field(120.0, gt=0)
    inbound_queue_frames: int = Field(500, ge=10)
    outbound_queue_messages: int = Field(1000, ge=10)
    # Per caller (docs/security.md): a caller token, and the IP address of a token's or an unauthenticated request.
    # Admin keys, phone calls and an open server (no keys, no secret) are not limited per caller. 0 turns one off.
    token_max_sessions: int = Field(4, ge=0, description="open sessions per caller token (then too_many_sessions)")
    ip_max_sessions: int = Field(20, ge=0, description="open sessions of token callers per IP address")
    token_sessions_per_minute: int = Field(20, ge=0, description="new sessions per token and minute (rate_limited)")
    ip_sessions_per_minute: int = Field(60, ge=0, description="new token sessions per IP address and minute")
    token_requests_per_minute: int = Field(120, ge=0, description="REST requests per token and minute")
    ip_requests_per_minute: int = Field(
        600, ge=0, description="REST requests per IP address and minute, from token callers and from requests "
                               "without a valid credential")
    max_tracked_keys: int = Field(100_000, ge=100, le=10_000_000,
                                  description="rate counters kept per kind (idle ones expire after a minute)")


class TurnConfig(_Section):
    """How a voice session runs a turn."""

    output_lead_ms: int = Field(500, ge=0, le=60000, description="how far reply audio may run ahead of real time")
    output_frame_ms: int = Field(100, ge=10, le=1000, description="size of reply audio frames sent to clients")
    speculative_stt: bool = Field(
        True, description="start transcribing at a short pause, keep it if the caller stays silent"
    )
    pause_ms: int = Field(200, ge=0, le=2000, description="pause that starts a speculative transcription")
    adaptive_endpoint: bool = Field(
        True, description="end the turn sooner when the transcription at the pause reads as a complete sentence, "
                          "later when it trails off ('and', 'um', a comma)")
    false_interruption: bool = Field(
        True, description="a sound during a reply pauses it; the reply resumes when it was only a cough or a "
                          "'mm-hmm' (short, and no words but backchannel ones)")
    onset_hint_ms: int = Field(60, ge=0, le=1000, description="voiced time that pauses a reply (0: never pause)")
    interrupt_after_ms: int = Field(
        500, ge=0, le=5000, description="speech this long past its confirmation interrupts a reply without waiting "
                                        "for its words")
    complete_endpoint_ms: int = Field(300, ge=100, le=5000, description="silence that ends a complete sentence")
    incomplete_endpoint_ms: int = Field(1000, ge=100, le=5000, description="silence that ends a trailing one")
    history_messages: int = Field(20, ge=0, le=1000, description="turns kept in a session without memory")
    first_phrase_max_chars: int = Field(
        32, ge=10, le=400, description="the first phrase of a reply is cut at a space after this many characters "
                                       "even without punctuation, so its audio starts early (16, the first three "
                                       "or four words, saved about 50 ms at p50 in scripts/bench_conversation.py)")
    reply_max_sentences: int = Field(
        3, ge=0, le=100, description="a voice reply stops at the end of this many sentences (0: no limit); the "
                                     "model is cancelled there and memory keeps what was spoken")
    long_reply_max_sentences: int = Field(
        30, ge=0, le=500, description="the same when the caller asked for a long answer (a story, details)")
    reply_max_tokens: int = Field(
        120, ge=0, le=32768, description="generation cap of a normal voice reply (0: the model's own max_tokens)")
    long_reply_max_tokens: int = Field(
        600, ge=0, le=32768, description="generation cap when the caller asked for a long answer")
    apology: str = Field(
        "Sorry, something went wrong on my side. Could you say that again?", max_length=400,
        description="spoken when a provider fails and no fallback is left ('' to stay silent)")


class AuthConfig(_Section):
    """Who may do what (docs/security.md): caller tokens and the browser Origin allow-list. Admin API keys are the
    top-level ``api_keys`` (``VOICESERVER_API_KEYS``)."""

    token_secret: SecretStr | None = Field(
        None, description="signs and verifies caller tokens (HMAC-SHA256); at least 32 characters, random "
                          "(voiceserver token issue); unset: no caller tokens are accepted")
    previous_token_secrets: list[SecretStr] = Field(
        default_factory=list, description="secrets still accepted for verification while tokens signed with them "
                                          "expire (rotation); never used to sign")
    clock_skew_s: float = Field(30.0, ge=0, le=600, description="tolerance on a token's iat and exp, for clocks "
                                                                 "that disagree between the issuer and the server")
    max_token_ttl_s: int = Field(30 * 86400, ge=60, description="longest lifetime `voiceserver token issue` signs")
    allowed_origins: list[str] = Field(
        default_factory=lambda: ["self", "localhost"],
        description="browser origins that may open a WebSocket or call /v1/ (self: pages this server serves; "
                    "localhost: any local port; *: any; or https://host[:port])")

    @field_validator("token_secret", "previous_token_secrets")
    @classmethod
    def _long_secret(cls, value: Any) -> Any:
        for secret in value if isinstance(value, list) else [value]:
            if secret is not None and len(secret.get_secret_value()) < 32:
                raise ValueError("a token secret needs at least 32 characters (python -c 'import secrets; "
                                 "print(secrets.token_urlsafe(32))')")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        from .identity.origins import ORIGIN_PATTERN

        for origin in value:
            if not ORIGIN_PATTERN.fullmatch(origin):
                raise ValueError(f"origin {origin!r} must be self, localhost, * or scheme://host[:port]")
        return value


class TwilioConfig(_Section):
    """The Twilio Media Streams bridge: ``POST /v1/twilio/voice`` (the call webhook) and ``WS /v1/twilio/stream``."""

    auth_token: SecretStr | None = Field(
        None, description="the Twilio account's auth token: when set, X-Twilio-Signature is checked on the webhook "
                          "and on the stream's WebSocket upgrade, and the stream must carry the token the webhook "
                          "issued for that call")
    public_url: str | None = Field(
        None, pattern=r"^https?://[^/?#\s]+/?$",
        description="https://host[:port] at which Twilio reaches this server (signatures are computed on it and "
                    "the stream URL is built from it); default: the request's Host and X-Forwarded-Proto/-Host")
    outbound_lead_ms: int = Field(
        200, ge=20, le=5000, description="reply audio is sent to Twilio at most this far ahead of the caller's "
                                         "playback, so a clear on barge-in cuts at most this much")
    max_buffered_ms: int = Field(
        10000, ge=500, le=600000, description="reply audio held in the gateway before it is sent; beyond this the "
                                              "session waits (backpressure)")
    max_message_bytes: int = Field(65536, ge=1024, le=1 << 20,
                                   description="a larger stream message is logged (message_too_large) and dropped")
    max_webhook_bytes: int = Field(65536, ge=1024, le=1 << 20, description="a larger webhook body is a 413")
    start_timeout_s: float = Field(10.0, gt=0, le=300,
                                   description="the stream must send its start message within this time")
    identify_callers: bool = Field(
        True, description="the caller's number (From; To for outbound calls) becomes the session's resource "
                          "(tel:<digits>), so a caller who calls back is remembered; false: every call is anonymous")
    thread_per: Literal["caller", "call"] = Field(
        "caller", description="caller: one ongoing conversation per caller (<resource>:phone); call: a new thread "
                              "per call (call:<CallSid>), the caller still known by working memory and recall")
    agent: str | None = Field(None, description="agent answering calls (default: the server's default agent); the "
                                                "webhook URL's ?agent= wins")
    max_log_per_code: int = Field(20, ge=0, le=10000,
                                  description="bad stream messages logged per call and code (all are counted)")


class OpenAIEndpointsConfig(_Section):
    """The OpenAI-compatible endpoints this server offers: ws /v1/realtime and the audio REST API."""

    realtime_max_event_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 20, description="largest client event on /v1/realtime (error, then close 1009); "
                                                  "the WebSocket itself takes at most 1 MiB")
    realtime_max_buffer_s: float = Field(
        60.0, gt=0, le=600, description="input audio held for a manual commit (turn_detection null); more is refused")
    realtime_max_items: int = Field(500, ge=10, le=100_000, description="conversation items kept per connection; "
                                                                         "the oldest go first")
    realtime_audio_delta_ms: int = Field(200, ge=20, le=2000, description="most audio in one output audio delta "
                                                                         "(each event stays far under 1 MiB)")
    realtime_max_tools: int = Field(64, ge=0, le=512, description="function tools a client may declare")
    realtime_max_instructions_chars: int = Field(20000, ge=100, le=1_000_000)
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024, description="largest file for /v1/audio/transcriptions")
    max_transcription_s: float = Field(600.0, gt=0, le=7200, description="longest audio /v1/audio/transcriptions "
                                                                         "transcribes")
    max_speech_chars: int = Field(4096, ge=1, le=100_000, description="longest input of /v1/audio/speech")


class IceServerConfig(_Section):
    """One STUN or TURN server for WebRTC (the browser gets the same list from ``GET /v1/webrtc/config``)."""

    urls: str | list[str] = Field(description="stun:host:port, turn:host:port?transport=udp|tcp, turns:host:port")
    username: str | None = Field(None, description="TURN user name")
    credential: SecretStr | None = Field(None, description="TURN password")

    @field_validator("urls")
    @classmethod
    def _ice_urls(cls, value: str | list[str]) -> str | list[str]:
        for url in [value] if isinstance(value, str) else value:
            if not re.fullmatch(r"(stuns?|turns?):[^\s?]+(\?transport=(udp|tcp))?", url):
                raise ValueError(f"ICE server url {url!r} must look like stun:host:port or turn:host:port")
        return value


class WebRtcConfig(_Section):
    """The WebRTC gateway (``POST /v1/webrtc/offer``): ICE servers and every limit of a peer."""

    enabled: bool = Field(True, description="serve /v1/webrtc/* (needs the webrtc extra: aiortc)")
    ice_servers: list[IceServerConfig] = Field(
        default_factory=list, description="STUN/TURN servers; empty: host candidates only (a LAN or this machine)")
    ice_timeout_s: float = Field(15.0, gt=0, le=300, description="a peer not connected this long after its offer "
                                                                  "is closed")
    peer_timeout_s: float = Field(5.0, gt=0, le=300, description="a connected peer that sends no audio and no "
                                                                  "event this long has vanished: its session ends")
    max_offer_bytes: int = Field(65536, ge=1024, le=1 << 20, description="largest offer body accepted")
    playback_buffer_ms: int = Field(3000, ge=200, le=60000, description="reply audio the outbound track may hold; "
                                                                         "more waits (must exceed turn.output_lead_ms)")


class StorageConfig(_Section):
    """Memory storage (LanceDB at LANCEDB_URI): outages, durability on local disk, and claims on suspended runs shared
    by several servers (docs/architecture.md, "Storage: outages, durability, claims")."""

    journal_dir: str | None = Field(
        "auto", description="where writes wait while storage is unreachable (an fsynced append-only journal, "
                            "replayed in order when storage answers and at start); auto: a 'journal' directory "
                            "next to a local memory directory, ./data/journal for an object store; null: off "
                            "(a storage outage fails the writes)")
    journal_max_entries: int = Field(10_000, ge=1, le=10_000_000,
                                     description="writes the journal holds at most (then storage_journal_full)")
    journal_max_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024, le=1 << 40,
                                   description="bytes the journal holds at most (then storage_journal_full)")
    op_timeout_s: float = Field(5.0, gt=0, le=300, description="a storage call without an answer after this long "
                                                               "is probed; if the probe fails too, storage is "
                                                               "degraded")
    probe_interval_s: float = Field(1.0, gt=0, le=300, description="how often storage is probed during an outage")
    cache_rows: int = Field(20_000, ge=0, le=10_000_000, description="rows read or written recently, kept in "
                                                                     "memory to answer reads during an outage")
    fsync: bool | Literal["files", "filesystem"] = Field(
        False, description="local disk: make each commit durable before the write returns, so an acknowledged turn "
                           "survives a power cut. true or files: fsync the commit's new files and directories "
                           "(about 8 flushes per turn); filesystem: one syncfs of the memory's filesystem per write "
                           "(cheaper, but it also flushes whatever else is dirty there). Cost: "
                           "scripts/bench_durability.py")
    index_cache_mib: int = Field(16, ge=0, le=1 << 20, description="LanceDB's index cache per store (its own "
                                                                  "default is 6 GiB)")
    metadata_cache_mib: int = Field(
        16, ge=0, le=1 << 20, description="LanceDB's metadata cache per store: manifests and file footers (its own "
                                          "default, 1 GiB, filled up under steady writes, and RSS with it)")
    claim_lease_s: float = Field(60.0, ge=1, le=86400, description="a suspended run claimed by a server that "
                                                                   "stopped renewing the claim (it died) may be "
                                                                   "claimed again after this long")


class Settings(BaseSettings):
    """Everything the server reads from its environment, in one validated object."""

    model_config = SettingsConfigDict(
        env_prefix="VOICESERVER_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="worker processes sharing the port (each loads the engines)")
    malloc_arena_max: int = Field(2, ge=0, le=64, description="glibc malloc arenas (0: glibc's default, 8 per core)")
    malloc_trim_interval_s: float = Field(60.0, ge=0, le=3600, description="seconds between malloc_trim(0); 0: off")
    websocket_compression: bool = Field(False, description="accept permessage-deflate (PCM barely compresses)")
    log_level: LogLevel = "info"
    log_format: LogFormat = "json"
    log_file: Path | None = None
    models_dir: Path = Path("models")
    preload: bool = Field(True, description="load the engines at start-up (readyz waits for them)")
    voice_provider: Provider = Field("local", validation_alias=AliasChoices("VOICE_PROVIDER", "voice_provider"))
    voice_quality: Quality = Field("medium", validation_alias=AliasChoices("VOICE_QUALITY", "voice_quality"))
    lancedb_uri: str = Field("./data/memory", validation_alias=AliasChoices("LANCEDB_URI", "lancedb_uri"))
    lancedb_storage_options: dict[str, str] = Field(
        default_factory=dict, description="object-store options for LANCEDB_URI (aws_endpoint, aws_region, ...)")
    openai_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"))
    openai_base_url: str | None = Field(None, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"))
    google_ai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GOOGLE_AI_API_KEY", "google_ai_api_key")
    )
    api_keys: list[SecretStr] = Field(default_factory=list, description="if set, clients must present one")
    app: str | None = Field(None, description="import path of a voiceserver.VoiceApp to serve ('pkg.module:app')")
    agent: AgentConfig = Field(default_factory=AgentConfig)
    agents: list[AgentConfig] = Field(default_factory=list)
    stt: SttConfig = Field(default_factory=SttConfig)
    tts: TtsConfig = Field(default_factory=TtsConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    twilio: TwilioConfig = Field(default_factory=TwilioConfig)
    openai_endpoints: OpenAIEndpointsConfig = Field(default_factory=OpenAIEndpointsConfig)
    webrtc: WebRtcConfig = Field(default_factory=WebRtcConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    debug_stats: bool = Field(False, description="serve GET /v1/debug/stats (asyncio tasks, sessions, outbox "
                                                 "sizes, threads, fds, RSS) for soak tests; off in production")

    @field_validator("log_level", mode="before")
    @classmethod
    def _warning_is_warn(cls, value: Any) -> Any:
        return "warn" if isinstance(value, str) and value.lower() == "warning" else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init kwargs) beat the environment, which beats the file. The file arrives through
        # _FileSource, injected by load(); a bare Settings() has no file.
        return init_settings, env_settings

    # --- derived values -------------------------------------------------------------------------------------------

    @property
    def stt_chain(self) -> list[Provider]:
        """Speech-to-text providers, in fallback order."""
        return _chain(self.stt.provider) or [self.voice_provider]

    @property
    def tts_chain(self) -> list[Provider]:
        """The server's text-to-speech providers, in fallback order (an agent's voice may name its own)."""
        return _chain(self.tts.provider) or _chain(self.agent.voice.provider) or [self.voice_provider]

    @property
    def stt_provider(self) -> Provider:
        return self.stt_chain[0]

    @property
    def tts_provider(self) -> Provider:
        return self.tts_chain[0]

    def journal_dir_for(self, uri: str) -> Path | None:
        """The storage journal directory for memory at ``uri`` (``storage.journal_dir``, "auto" resolved)."""
        configured = self.storage.journal_dir
        if configured is None or configured.lower() in ("", "none", "null", "off"):
            return None
        if configured != "auto":
            return Path(configured)
        if "://" not in uri or uri.startswith("file://"):
            return Path(uri.removeprefix("file://")).parent / "journal"
        return Path("data") / "journal"

    @property
    def token_secrets(self) -> list[str]:
        """The secrets caller tokens are verified with: the current one first, then the previous ones."""
        values = [self.auth.token_secret, *self.auth.previous_token_secrets]
        return [v.get_secret_value() for v in values if v is not None]

    @property
    def open_access(self) -> bool:
        """No API keys and no token secret: anyone may act for any resource (local use)."""
        return not any(k.get_secret_value() for k in self.api_keys) and not self.token_secrets

    @property
    def agent_configs(self) -> list[AgentConfig]:
        """The default agent first, then the extra ones (names are unique)."""
        return [self.agent, *[a for a in self.agents if a.name != self.agent.name]]

    def secrets(self) -> list[str]:
        """Every secret value, so the logger can scrub them."""
        values = [self.openai_api_key, self.google_ai_api_key, self.llm.openai_compatible_api_key, *self.api_keys,
                  self.twilio.auth_token, self.auth.token_secret, *self.auth.previous_token_secrets,
                  *(server.credential for server in self.webrtc.ice_servers)]
        found = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
        found += [v for k, v in self.lancedb_storage_options.items()
                  if any(word in k.lower() for word in ("key", "secret", "token", "password")) and v]
        return found


def _chain(value: Provider | list[Provider] | None) -> list[Provider]:
    if value is None:
        return []
    return list(dict.fromkeys(value if isinstance(value, list) else [value]))


class _FileSource(PydanticBaseSettingsSource):
    """Values from the --config file (already parsed), lowest precedence after defaults."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]):
        super().__init__(settings_cls)
        # Fields known by an environment name (VOICE_PROVIDER...) are keyed by that name in the environment source;
        # key the file's values the same way so the two merge instead of colliding.
        aliases = {}
        for name, info in settings_cls.model_fields.items():
            if isinstance(info.validation_alias, AliasChoices):
                aliases[name] = str(info.validation_alias.choices[0])
        self._data = {aliases.get(k, k): v for k, v in data.items()}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON settings file into a dict, with a readable error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise SettingsError(f"config file {path} is not valid {kind}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping at the top level, not {type(data).__name__}")
    return data


_SECRET_WORDS = ("secret", "key", "token", "password", "credential")


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: the field path, what is wrong, and the allowed values when there is a fixed set."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"]
        ctx = err.get("ctx") or {}
        if err["type"] == "literal_error" and "expected" in ctx:
            msg = f"invalid value {err.get('input')!r}; allowed values: {ctx['expected']}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif not any(word in where.lower() for word in _SECRET_WORDS):  # a secret's value is never echoed
            msg = f"{msg} (got {err.get('input')!r})" if "input" in err and not isinstance(err["input"], dict) else msg
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings from flags (``overrides``), the environment and ``config_file``.

    Raises SettingsError with a message naming the field and the allowed values.
    """
    file_data = read_config_file(config_file) if config_file else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        ):
            return init_settings, env_settings, _FileSource(settings_cls, file_data)

    try:
        return _Loaded(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None

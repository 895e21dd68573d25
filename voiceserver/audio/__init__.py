"""Pure audio functions: pcm16 <-> float32, mu-law, streaming resampling and format conversion, framing, WAV and
compressed containers (PyAV, in memory). No asyncio, no sockets, no file access except the explicit WAV helpers.
"""

from .containers import CONTENT_TYPES, FILETYPES, ContainerEncoder, check_filetype, decode_audio, encode_audio
from .convert import StreamConverter, convert_chunk, to_pcm16_16k
from .format import (
    ENCODINGS,
    MULAW_RATES,
    PCM16_16K,
    PCM16_RATES,
    AudioChunk,
    AudioFormat,
    Encoding,
    validate_format,
)
from .framing import Framer
from .mulaw import mulaw_decode, mulaw_encode
from .pcm import SILENCE_DBFS, float32_to_pcm16, pcm16_samples, pcm16_to_float32, rms_dbfs
from .resample import Resampler, resample_pcm16
from .wav import read_wav, wav_bytes, wav_header, write_wav

__all__ = [
    "ENCODINGS",
    "MULAW_RATES",
    "PCM16_16K",
    "PCM16_RATES",
    "AudioChunk",
    "AudioFormat",
    "Encoding",
    "validate_format",
    "CONTENT_TYPES",
    "FILETYPES",
    "SILENCE_DBFS",
    "ContainerEncoder",
    "Framer",
    "Resampler",
    "StreamConverter",
    "check_filetype",
    "convert_chunk",
    "decode_audio",
    "encode_audio",
    "float32_to_pcm16",
    "mulaw_decode",
    "mulaw_encode",
    "pcm16_samples",
    "pcm16_to_float32",
    "read_wav",
    "resample_pcm16",
    "rms_dbfs",
    "to_pcm16_16k",
    "wav_bytes",
    "wav_header",
    "write_wav",
]

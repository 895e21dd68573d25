// Errors in words a person understands (codes from docs/protocol.md).
const WORDS = {
  mic_denied: "Microphone access is blocked. Allow the microphone for this site (the icon in the address bar), then press Talk again.",
  mic_missing: "No microphone was found. Plug one in and press Talk again.",
  mic_busy: "The microphone is in use by another application.",
  server_full: "The assistant is busy right now: every line is taken. Please try again in a minute.",
  server_shutdown: "The server is restarting. Reconnecting as soon as it is back…",
  server_restart: "The server is restarting. Reconnecting as soon as it is back…",
  unreachable: "Can't reach the server. Check the connection; retrying…",
  connection_lost: "The connection dropped. Reconnecting…",
  unauthorized: "This server needs an access key: add ?api_key=YOUR_KEY (or ?token=YOUR_TOKEN) to the page address.",
  token_expired: "Your access token has expired: open the page again from the application that gave it to you.",
  forbidden_resource: "This access token belongs to another caller or conversation.",
  forbidden_origin: "This page may not use the voice server: its address is not in the server's allowed origins.",
  too_many_sessions: "You already have the most conversations open at once. Close one, then press Talk again.",
  rate_limited: "Too many attempts in a minute. Please wait a moment and press Talk again.",
  text_too_long: "That message is too long.",
  turn_timeout: "That took too long to answer. Please ask again.",
};

export function describeError(code, message) {
  if (WORDS[code]) return WORDS[code];
  if (/^(stt|llm|tts|agent|storage|provider)_/.test(code || "") || code === "internal_error") {
    return "Sorry, the assistant had a problem answering. Please try again.";
  }
  return message || "Something went wrong.";
}

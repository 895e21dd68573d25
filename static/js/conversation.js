// The native protocol's events -> what the page shows. Both transports hand their JSON messages here, so a client
// written for one transport reuses this on the other.

import { describeError } from "./messages.js";

export function createConversation({ view, stats, send }) {
  const replies = new Map(); // turn_id -> assistant line
  const workflows = new Map(); // run_id -> workflow card

  function reply(turnId) {
    let line = replies.get(turnId);
    if (!line) {
      line = view.addLine("assistant", "");
      line.classList.add("pending");
      replies.set(turnId, line);
      if (replies.size > 200) replies.delete(replies.keys().next().value); // bounded
    }
    return line;
  }

  const handlers = {
    "session.started": (m) => view.sessionStarted(m),
    "speech.started": () => view.activity("hearing"),
    "speech.stopped": () => view.activity("thinking"),
    transcript: (m) => {
      if (m.role === "user" && m.text && m.text.trim()) view.addLine("user", m.text.trim());
      else if (m.role === "user") view.activity("listening"); // only noise: no reply follows
    },
    "response.started": (m) => { reply(m.turn_id); view.activity("thinking"); },
    "response.text.delta": (m) => {
      const line = reply(m.turn_id);
      line.classList.remove("pending");
      view.appendText(line, m.delta);
    },
    "response.audio.started": () => view.activity("speaking"),
    "response.paused": () => view.activity("hearing"),
    "response.resumed": () => view.activity("speaking"),
    "response.cancelled": (m) => view.markInterrupted(reply(m.turn_id), m.heard_text),
    "response.done": (m) => {
      const line = reply(m.turn_id);
      line.classList.remove("pending");
      if (m.interrupted) view.markInterrupted(line, m.text);
      else if (m.text) view.setText(line, m.text);
      if (!line.textContent.trim()) line.remove(); // nothing was said (noise, an empty reply)
      stats.turns += 1;
      view.activity("listening");
    },
    metrics: (m) => {
      if (typeof m.voice_to_voice_ms === "number") view.latency(Math.round(m.voice_to_voice_ms));
    },
    "tool.approval": (m) => view.approval(m, (approve) => send(approve
      ? { type: "tool.approve", tool_call_id: m.tool_call_id }
      : { type: "tool.decline", tool_call_id: m.tool_call_id, reason: "declined on the page" })),
    "workflow.event": (m) => {
      let card = workflows.get(m.run_id);
      if (!card) {
        card = view.workflowCard(m.run_id, (m.event && m.event.workflow_id) || "workflow");
        workflows.set(m.run_id, card);
      }
      view.workflowProgress(card, m.event || {});
    },
    error: (m) => view.notice(describeError(m.code, m.message), m.code),
  };

  return function handle(message) {
    const handler = handlers[message.type];
    if (handler) handler(message);
  };
}

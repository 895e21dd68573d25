// The page's DOM: the conversation, the status, the meters, cards for approvals and workflows. No protocol here.

const ACTIVITY = {
  idle: "Press Talk and say hello",
  listening: "Listening…",
  hearing: "Hearing you…",
  thinking: "Thinking…",
  speaking: "Speaking…",
  waiting: "Waiting for the server…",
};

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export class View {
  constructor(root) {
    this.root = root;
    this.transcript = root.querySelector("[data-testid=transcript]");
    this.empty = root.querySelector("#empty");
    this.statusNode = root.querySelector("[data-testid=status]");
    this.latencyNode = root.querySelector("[data-testid=latency]");
    this.noticeNode = root.querySelector("#notice");
    this.activityNode = root.querySelector("#activity");
    this.talk = root.querySelector("[data-testid=talk]");
    this.talkLabel = root.querySelector("#talk-label");
    this.transportNode = root.querySelector("#transport");
    this.callerNode = root.querySelector("#caller-id");
    this.threadNode = root.querySelector("#thread-id");
    this.agentPicker = root.querySelector("#agent");
    this.agentField = root.querySelector("#agent-field");
    this.textForm = root.querySelector("#text-form");
    this.textInput = root.querySelector("#text-input");
    this.micLevel = root.querySelector("#mic-level");
  }

  status(state, text) {
    this.statusNode.dataset.state = state;
    this.statusNode.querySelector(".label").textContent = text;
    document.body.dataset.state = state;
  }

  activity(kind) {
    this.activityNode.textContent = ACTIVITY[kind] || "";
    this.activityNode.dataset.kind = kind;
    document.body.dataset.activity = kind;
  }

  talking(live, busy) {
    this.talk.classList.toggle("live", live);
    this.talk.setAttribute("aria-pressed", String(live));
    this.talkLabel.textContent = busy ? "Connecting…" : live ? "Stop" : "Talk";
    this.agentPicker.disabled = live || busy;
    this.textInput.disabled = !live;
    this.textForm.querySelector("button").disabled = !live;
  }

  enableTalk(enabled) {
    this.talk.disabled = !enabled;
  }

  level(value) {
    this.root.style.setProperty("--level", value.toFixed(3));
    this.micLevel.setAttribute("aria-valuenow", String(Math.round(value * 100)));
  }

  remoteLevel(value) {
    this.root.style.setProperty("--remote-level", value.toFixed(3));
  }

  transport(name) {
    this.transportNode.textContent = name === "webrtc" ? "WebRTC" : name === "websocket" ? "WebSocket" : "—";
    this.transportNode.dataset.transport = name || "";
  }

  identity({ caller, thread }) {
    this.callerNode.textContent = caller;
    this.threadNode.textContent = thread;
  }

  agents(list, chosen) {
    this.agentPicker.replaceChildren(...list.map((agent) => {
      const option = element("option", "", agent.name);
      option.value = agent.name;
      if (agent.description) option.title = agent.description;
      option.selected = agent.name === chosen;
      return option;
    }));
    this.agentField.hidden = list.length < 2;
  }

  sessionStarted(message) {
    this.root.dataset.sessionId = message.session_id || "";
  }

  addLine(role, text) {
    this.empty.hidden = true;
    const line = element("div", "line");
    line.dataset.role = role;
    const bubble = element("div", "bubble");
    bubble.append(element("span", "text", text));
    line.append(bubble);
    this.transcript.append(line);
    while (this.transcript.children.length > 400) this.transcript.children[1].remove(); // keep the page light
    this.scroll();
    return line;
  }

  appendText(line, delta) {
    line.querySelector(".text").textContent += delta;
    this.scroll();
  }

  setText(line, text) {
    line.querySelector(".text").textContent = text;
  }

  markInterrupted(line, heard) {
    line.classList.remove("pending");
    line.classList.add("interrupted");
    line.dataset.interrupted = "true";
    this.setText(line, heard && heard.trim() ? heard : "…");
    if (!line.querySelector(".tag")) line.append(element("span", "tag", "interrupted"));
  }

  approval(message, decide) {
    this.empty.hidden = true;
    const card = element("div", "card approval");
    card.dataset.toolCallId = message.tool_call_id;
    card.append(element("div", "card-title", `The assistant wants to use “${message.tool_name}”`));
    const args = JSON.stringify(message.args || {}, null, 1);
    card.append(element("pre", "card-args", args.length > 400 ? `${args.slice(0, 400)}…` : args));
    const actions = element("div", "card-actions");
    const approve = element("button", "approve", "Approve");
    const decline = element("button", "decline", "Decline");
    approve.dataset.testid = "approve";
    decline.dataset.testid = "decline";
    const settle = (ok) => {
      decide(ok);
      approve.disabled = decline.disabled = true;
      card.classList.add(ok ? "approved" : "declined");
      card.querySelector(".card-title").textContent += ok ? " — approved" : " — declined";
    };
    approve.onclick = () => settle(true);
    decline.onclick = () => settle(false);
    actions.append(approve, decline);
    card.append(actions, element("div", "card-hint", "You can also answer out loud: “yes” or “no”."));
    this.transcript.append(card);
    this.scroll();
  }

  workflowCard(runId, name) {
    this.empty.hidden = true;
    const card = element("div", "card workflow");
    card.dataset.runId = runId;
    card.append(element("div", "card-title", `Workflow ${name}`), element("ol", "steps"));
    this.transcript.append(card);
    this.scroll();
    return card;
  }

  workflowProgress(card, event) {
    const type = String(event.type || "");
    const payload = event.payload || {};
    const status = { success: "done", suspended: "waiting for you", failed: "failed", canceled: "cancelled",
                     running: "running" };
    if (type === "workflow-finish") {
      const state = status[payload.status] || String(payload.status || "finished");
      card.dataset.state = state;
      card.classList.toggle("finished", payload.status === "success");
      return;
    }
    const step = payload.step_id || payload.stepId || payload.id || "";
    const states = { "workflow-step-start": "running", "workflow-step-result": "done",
                     "workflow-step-suspended": "waiting for you" };
    let state = states[type];
    if (type === "workflow-step-finish") state = status[payload.status] || "done";
    if (!step || !state) return; // workflow-start, custom events
    const steps = card.querySelector(".steps");
    let item = steps.querySelector(`[data-step="${CSS.escape(String(step))}"]`);
    if (!item) {
      item = element("li", "", "");
      item.dataset.step = step;
      steps.append(item);
    }
    item.textContent = `${step}: ${state}`;
    item.dataset.state = state;
    this.scroll();
  }

  latency(ms) {
    this.latencyNode.textContent = String(ms);
  }

  notice(text, code) {
    this.noticeNode.textContent = text || "";
    this.noticeNode.dataset.code = code || "";
    this.noticeNode.hidden = !text;
  }

  scroll() {
    this.transcript.scrollTop = this.transcript.scrollHeight;
  }
}

// Who is calling and which conversation this is, kept in localStorage so a returning visitor is remembered.
// Ids follow the server's rule: [A-Za-z0-9._:@-]{1,128}.

const CALLER_KEY = "voiceserver.caller";
const THREAD_KEY = "voiceserver.thread";
const ID_PATTERN = /^[A-Za-z0-9._:@-]{1,128}$/;

function randomId(prefix) {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function read(key) {
  try {
    const value = localStorage.getItem(key);
    return value && ID_PATTERN.test(value) ? value : null;
  } catch {
    return null; // storage disabled (private mode): a new caller every visit
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    /* storage disabled: the ids live as long as the page */
  }
}

export function loadIdentity() {
  let caller = read(CALLER_KEY);
  if (!caller) {
    caller = randomId("caller-");
    write(CALLER_KEY, caller);
  }
  let thread = read(THREAD_KEY);
  if (!thread) {
    thread = randomId("conv-");
    write(THREAD_KEY, thread);
  }
  return { caller, thread };
}

export function newConversation() {
  const thread = randomId("conv-");
  write(THREAD_KEY, thread);
  return thread;
}

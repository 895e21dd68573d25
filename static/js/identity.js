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

// A caller token (docs/security.md: base64url(payload).base64url(mac)) says who the caller is: its payload is
// readable, only its signature is secret. The page then uses the token's resource (and thread and agent when it
// names them) instead of ids of its own, which the server would refuse (forbidden_resource). An API key is no token.
export function tokenClaims(credential) {
  const parts = (credential || "").split(".");
  if (parts.length !== 2 || !parts[0] || !parts[1]) return null;
  try {
    const claims = JSON.parse(atob(parts[0].replace(/-/g, "+").replace(/_/g, "/")));
    return claims && typeof claims.resource === "string" && ID_PATTERN.test(claims.resource) ? claims : null;
  } catch {
    return null;
  }
}

export function loadIdentity(credential = "") {
  const claims = tokenClaims(credential);
  let caller = claims ? claims.resource : read(CALLER_KEY);
  if (!caller) {
    caller = randomId("caller-");
    write(CALLER_KEY, caller);
  }
  // With a token, conversations are remembered per caller: a thread of another caller would be refused.
  const threadKey = claims ? (claims.thread ? null : `${THREAD_KEY}.${caller}`) : THREAD_KEY;
  let thread = claims && claims.thread ? claims.thread : read(threadKey);
  if (!thread) {
    thread = randomId("conv-");
    write(threadKey, thread);
  }
  return { caller, thread, threadKey, agent: (claims && claims.agent) || null };
}

export function newConversation(identity) {
  if (!identity.threadKey) return identity.thread; // a token for one conversation: it is the only one
  const thread = randomId("conv-");
  write(identity.threadKey, thread);
  return thread;
}

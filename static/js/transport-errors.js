// Why a transport could not start: a code the page turns into words, and whether another transport may work.
export class TransportError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code; // unreachable | server_full | server_shutdown | unauthorized | unsupported | ice_failed | ...
    this.status = status;
  }

  // The server itself refused or is gone: the other transport would meet the same answer.
  get final() {
    return ["server_full", "server_shutdown", "unauthorized", "unreachable"].includes(this.code);
  }
}

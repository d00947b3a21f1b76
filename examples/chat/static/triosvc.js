// triosvc.js: a small, dependency-free browser client for triosvc's WebSocket RPC
// protocol (the same as nameko's). An ES module:
//
//     import { connect } from "/static/triosvc.js";
//
//     const client = connect();                    // ws(s)://<this host>/ws
//     const socketId = await client.ready;         // once the server said "connected"
//     client.on("message", (data) => console.log(data));
//     try {
//         await client.call("say", { room: "lobby", text: "hi" });
//     } catch (error) {
//         console.log(error.excType, error.value); // "NotInRoom", "you are not in room ..."
//     }
//
// The protocol, in JSON text frames:
//   server -> client  {"type": "event", "event": "connected", "data": {"socket_id": "..."}}
//   client -> server  {"method": "say", "data": {...}, "correlation_id": 7}
//   server -> client  {"type": "result", "success": true, "data": ..., "correlation_id": 7}
//                     {"type": "result", "success": false, "correlation_id": 7,
//                      "error": {"exc_type": "...", "value": "...", "exc_args": [...]}}
//   server -> client  {"type": "event", "event": "<name>", "data": ...}   (the hub's messages)
//
// No reconnection: when the socket closes, pending calls are rejected and the "close"
// handlers run; make a new client to connect again.

/** An error frame from the server, or the connection going away ("ConnectionClosed"). */
export class TriosvcError extends Error {
    constructor(excType, value, excArgs = []) {
        super(value ? `${excType}: ${value}` : excType);
        this.name = "TriosvcError";
        this.excType = excType; // the exception's class name on the server
        this.value = value; // its message
        this.excArgs = excArgs;
    }
}

/** The URL of the server's WebSocket endpoint for this page: ws: or wss: like the page. */
export function defaultUrl(path = "/ws") {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${path}`;
}

/** Open a connection; see TriosvcClient. */
export function connect(url = defaultUrl()) {
    return new TriosvcClient(url);
}

export class TriosvcClient {
    constructor(url = defaultUrl()) {
        this.socketId = null; // set by the "connected" event
        this.closed = false;
        this._nextId = 1; // correlation ids: 1, 2, 3...
        this._pending = new Map(); // correlation id -> {resolve, reject}
        this._handlers = new Map(); // event name -> Set of handlers

        // Resolves with the socket id once the server has sent "connected"; rejects if
        // the socket closes first.
        this.ready = new Promise((resolve, reject) => {
            this._ready = { resolve, reject };
        });
        this.ready.catch(() => {}); // nobody waiting on it is not an error

        this.socket = new WebSocket(url);
        this.socket.addEventListener("message", (event) => this._receive(event.data));
        this.socket.addEventListener("close", (event) => this._closed(event));
        // An "error" event is always followed by "close", which does the cleaning up.
    }

    /**
     * Call a method of the service: `call("join", {room, nickname})`.
     * Resolves with its return value; rejects with a TriosvcError.
     */
    async call(method, data = {}) {
        await this.ready;
        if (this.closed) {
            throw new TriosvcError("ConnectionClosed", "the connection is closed");
        }
        const correlationId = this._nextId++;
        const reply = new Promise((resolve, reject) => {
            this._pending.set(correlationId, { resolve, reject });
        });
        this.socket.send(JSON.stringify({ method, data, correlation_id: correlationId }));
        return reply;
    }

    /**
     * Run `handler(data)` for each hub message named `event`. Two more events come
     * from the client itself: "connected" ({socket_id}) and "close" ({code, reason}).
     * Returns a function that removes the handler.
     */
    on(event, handler) {
        if (!this._handlers.has(event)) {
            this._handlers.set(event, new Set());
        }
        this._handlers.get(event).add(handler);
        return () => this._handlers.get(event).delete(handler);
    }

    /** Close the connection (1000: normal closure). */
    close(code = 1000, reason = "") {
        this.socket.close(code, reason);
    }

    // -- internals -----------------------------------------------------------------------

    _receive(text) {
        let message;
        try {
            message = JSON.parse(text);
        } catch {
            console.warn("triosvc: a frame that is not JSON", text);
            return;
        }
        if (message.type === "result") {
            this._settle(message);
        } else if (message.type === "event") {
            if (message.event === "connected" && this.socketId === null) {
                this.socketId = message.data.socket_id;
                this._ready.resolve(this.socketId);
            }
            this._emit(message.event, message.data);
        } else {
            console.warn("triosvc: a frame of unknown type", message);
        }
    }

    _settle(message) {
        const call = this._pending.get(message.correlation_id);
        if (call === undefined) {
            // An answer to nothing we sent: a frame the server could not read at all.
            console.warn("triosvc: an answer to no pending call", message);
            return;
        }
        this._pending.delete(message.correlation_id);
        if (message.success) {
            call.resolve(message.data);
        } else {
            const error = message.error || {};
            call.reject(
                new TriosvcError(error.exc_type || "UnknownError", error.value || "", error.exc_args),
            );
        }
    }

    _emit(event, data) {
        for (const handler of this._handlers.get(event) || []) {
            try {
                handler(data);
            } catch (error) {
                console.error(`triosvc: a handler of "${event}" failed`, error); // and go on
            }
        }
    }

    _closed(event) {
        this.closed = true;
        const error = new TriosvcError(
            "ConnectionClosed",
            `the connection closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""})`,
        );
        this._ready.reject(error);
        for (const call of this._pending.values()) {
            call.reject(error);
        }
        this._pending.clear();
        this._emit("close", { code: event.code, reason: event.reason });
    }
}

// asguest: an htlc_accepted policy plugin for Fulgur, in AssemblyScript, speaking the
// plugin protocol through the WASM ABI of docs/WASM.md (exports `memory`, `alloc`,
// `on_message`; import `fulgur.send`).
//
// - Forwards whose `forward_msat` is below the option `asguest-min-forward-msat` are
//   failed with failure_message 1007 (temporary_channel_failure); others continue.
// - Payments to this node are held (the node needs `--wasm-sandbox=asguest.wasm:hold=true`)
//   until `asguest-release payment_hash result [payment_key|failure_message]` answers them:
//   `resolve` with the preimage (a hold invoice), `fail`, or `continue`.
// - `asguest-held` lists the held payment hashes; `asguest-crash` aborts the instance
//   (to test the host's failure handling).

import { JValue, J_ARR, J_OBJ, Parser, quote, strOf, u64Of } from "./json";

@external("fulgur", "send")
declare function send(ptr: usize, len: i32): void;

const MANIFEST =
  '{"options":[{"name":"asguest-min-forward-msat","type":"int","default":0,' +
  '"description":"Forwards below this amount (msat) are failed"}],' +
  '"rpcmethods":[' +
  '{"name":"asguest-release","usage":"payment_hash result [payment_key|failure_message]",' +
  '"description":"Answer a held payment: resolve (with its preimage), fail or continue"},' +
  '{"name":"asguest-held","usage":"","description":"Payment hashes held by asguest"},' +
  '{"name":"asguest-crash","usage":"","description":"Abort the instance (for tests)"}],' +
  '"hooks":["htlc_accepted"],"subscriptions":[],"dynamic":true}';

/** The buffer the host writes the next message into; reused, grown when too small. */
let inbox = new ArrayBuffer(4096);
/** Smallest forward let through, msat. */
let minForward: i64 = 0;
/** Held payments: payment hash -> the raw id of the htlc_accepted call to answer. */
const held = new Map<string, string>();

export function alloc(len: i32): usize {
  if (len > inbox.byteLength) inbox = new ArrayBuffer(len);
  return changetype<usize>(inbox);
}

function emit(msg: string): void {
  const b = String.UTF8.encode(msg);
  send(changetype<usize>(b), b.byteLength);
}

function respond(rawId: string, result: string): void {
  emit('{"jsonrpc":"2.0","id":' + rawId + ',"result":' + result + "}");
}

function respondError(rawId: string, code: i32, message: string): void {
  emit(
    '{"jsonrpc":"2.0","id":' + rawId + ',"error":{"code":' + code.toString() +
      ',"message":' + quote(message) + "}}",
  );
}

function log(level: string, message: string): void {
  emit(
    '{"jsonrpc":"2.0","method":"log","params":{"level":' + quote(level) +
      ',"message":' + quote("asguest: " + message) + "}}",
  );
}

export function on_message(ptr: usize, len: i32): void {
  const text = String.UTF8.decodeUnsafe(ptr, <usize>len);
  const msg = Parser.parse(text);
  if (msg == null || msg.kind != J_OBJ) {
    log("unusual", "ignoring a message that is not a JSON object");
    return;
  }
  const id = msg.get("id");
  const method = msg.get("method");
  // Responses (to requests we never make) and notifications (none subscribed): ignored.
  if (id == null || method == null) return;
  const rawId = text.substring(id.start, id.end);
  const params = msg.get("params");
  const name = strOf(method, "");
  if (name == "getmanifest") {
    respond(rawId, MANIFEST);
  } else if (name == "init") {
    init(params);
    respond(rawId, "{}");
  } else if (name == "htlc_accepted") {
    htlcAccepted(rawId, params);
  } else if (name == "asguest-release") {
    release(rawId, params);
  } else if (name == "asguest-held") {
    const keys = held.keys();
    let out = '{"held":[';
    for (let i = 0; i < keys.length; i++) {
      if (i > 0) out += ",";
      out += quote(keys[i]);
    }
    respond(rawId, out + "]}");
  } else if (name == "asguest-crash") {
    throw new Error("asguest-crash: aborting on request");
  } else {
    respondError(rawId, -32601, "unknown method " + name);
  }
}

function init(params: JValue | null): void {
  if (params == null) return;
  const opts = params.get("options");
  if (opts == null) return;
  const v = u64Of(opts.get("asguest-min-forward-msat"));
  if (v >= 0) minForward = v;
  log("info", "minimum forward " + minForward.toString() + " msat");
}

function htlcAccepted(rawId: string, params: JValue | null): void {
  if (params == null) {
    respond(rawId, '{"result":"continue"}');
    return;
  }
  const onion = params.get("onion");
  const htlc = params.get("htlc");
  const isForward = onion != null && onion.get("short_channel_id") != null;
  if (isForward) {
    const amount = onion != null ? u64Of(onion.get("forward_msat")) : -1;
    if (amount >= 0 && amount < minForward) {
      log("info", "failing a forward of " + amount.toString() + " msat (below the minimum)");
      respond(rawId, '{"result":"fail","failure_message":"1007"}');
    } else {
      respond(rawId, '{"result":"continue"}');
    }
    return;
  }
  const hash = htlc != null ? strOf(htlc.get("payment_hash"), "") : "";
  if (hash.length == 0) {
    respond(rawId, '{"result":"continue"}');
    return;
  }
  // Several parts of one payment come as several calls; each keeps its own call, and a
  // release answers the latest (enough for the single-part payments of the tests).
  held.set(hash, rawId);
  log("info", "holding " + hash);
}

function release(rawId: string, params: JValue | null): void {
  let hash = "";
  let result = "";
  let extra = "";
  if (params != null && params.kind == J_OBJ) {
    hash = strOf(params.get("payment_hash"), "");
    result = strOf(params.get("result"), "");
    extra = strOf(params.get("payment_key"), strOf(params.get("failure_message"), ""));
  } else if (params != null && params.kind == J_ARR) {
    hash = strOf(params.at(0), "");
    result = strOf(params.at(1), "");
    extra = strOf(params.at(2), "");
  }
  if (!held.has(hash)) {
    respondError(rawId, -32602, "no payment held with hash " + hash);
    return;
  }
  let answer = "";
  if (result == "resolve") {
    if (extra.length != 64) {
      respondError(rawId, -32602, "resolve needs the payment_key (64 hex digits)");
      return;
    }
    answer = '{"result":"resolve","payment_key":' + quote(extra) + "}";
  } else if (result == "fail") {
    const m = extra.length > 0 ? extra : "2002";
    answer = '{"result":"fail","failure_message":' + quote(m) + "}";
  } else if (result == "continue") {
    answer = '{"result":"continue"}';
  } else {
    respondError(rawId, -32602, "result must be resolve, fail or continue");
    return;
  }
  const hookId = held.get(hash);
  held.delete(hash);
  respond(hookId, answer);
  log("info", "released " + hash + ": " + result);
  respond(rawId, '{"released":true,"payment_hash":' + quote(hash) + "}");
}

// A merchant's checkout over clnrest, and nothing else: the shop talks to its node only
// through clnrest's REST calls (`POST /v1/<method>` with a rune) and its Socket.IO
// notifications, the way a web shop in front of Core Lightning does.
//
// The customer orders an item and gets a hold invoice (QR code and text). When the
// payment arrives the node holds it (htlc-hold's `ACCEPTED`): the customer sees "held",
// the merchant sees Deliver and Cancel. Deliver settles with the preimage the shop kept,
// and the customer gets that preimage as proof of payment; Cancel fails the held payment
// back, so the customer's wallet gets its money back.
//
// The rune is the shop's and is restricted to the hold-invoice methods and the
// notifications; it never reaches a browser. The merchant's page needs the token printed
// at start-up.
//
// Environment:
//   CLNREST_URL   clnrest's base URL, e.g. https://127.0.0.1:3010 (required)
//   CLNREST_CA    the CA that signed clnrest's certificate (<network dir>/ca.pem)
//   SHOP_RUNE     a rune allowing holdinvoice, settleholdinvoice, cancelholdinvoice,
//                 listholdinvoices and listclnrest-notifications (required)
//   SHOP_PORT     the port to serve on (default: any free port), on SHOP_HOST (127.0.0.1)
//   MERCHANT_TOKEN  the merchant page's token (default: random)

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { Agent as HttpAgent, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";

import QRCode from "qrcode";
import { io } from "socket.io-client";

const here = fileURLToPath(new URL(".", import.meta.url));
const env = process.env;
const REST = new URL(need("CLNREST_URL"));
const CA = env.CLNREST_CA ? readFileSync(env.CLNREST_CA) : undefined;
const RUNE = need("SHOP_RUNE");
const TOKEN = env.MERCHANT_TOKEN || randomBytes(16).toString("hex");

function need(name) {
  if (!env[name]) {
    console.error(`shop: ${name} is not set`);
    process.exit(2);
  }
  return env[name];
}

export const CATALOG = [
  { id: "sticker", name: "Lightning sticker pack", sat: 1500 },
  { id: "coffee", name: "Coffee beans, 250 g", sat: 12000 },
  { id: "shirt", name: "Fulgur T-shirt", sat: 25000 },
];

// --- clnrest ------------------------------------------------------------------------

class RestError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

/** Calls `method` on the node through clnrest; resolves to its result. */
function rest(method, params = {}) {
  const body = JSON.stringify(params);
  const send = REST.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(
      new URL(`/v1/${method}`, REST),
      {
        method: "POST",
        ca: CA,
        agent: agent,
        headers: {
          Rune: RUNE,
          "Content-Type": "application/json",
          "Content-Length": Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          let json = null;
          try {
            json = JSON.parse(Buffer.concat(chunks).toString("utf8"));
          } catch {
            /* not JSON: reported below with the status */
          }
          if (res.statusCode === 201) resolve(json);
          else reject(new RestError(res.statusCode, json));
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

// One keep-alive connection pool for every call.
const agent =
  REST.protocol === "https:"
    ? new HttpsAgent({ keepAlive: true, ca: CA })
    : new HttpAgent({ keepAlive: true });

// --- orders -------------------------------------------------------------------------

/** Orders by id; each keeps the preimage that settles it (never sent before settling). */
const orders = new Map();
const byHash = new Map();
let nextId = 1;
/** Server-Sent Events listeners: order id (or "merchant") -> set of responses. */
const listeners = new Map();

function customerView(o) {
  const v = {
    id: o.id,
    item: o.item.name,
    amount_sat: o.item.sat,
    bolt11: o.bolt11,
    qr: o.qr,
    payment_hash: o.hash,
    state: o.state,
  };
  // The preimage is the proof of payment: the customer gets it once paid.
  if (o.state === "SETTLED") v.preimage = o.preimage;
  return v;
}

function merchantView(o) {
  return {
    id: o.id,
    item: o.item.name,
    amount_sat: o.item.sat,
    payment_hash: o.hash,
    state: o.state,
    created: o.created,
  };
}

function push(key, data) {
  for (const res of listeners.get(key) || []) {
    res.write(`data: ${JSON.stringify(data)}\n\n`);
  }
}

function setState(o, state) {
  if (!state || o.state === state) return;
  o.state = state;
  push(`order:${o.id}`, customerView(o));
  push("merchant", merchantView(o));
  console.log(`shop: order ${o.id} (${o.item.name}) is ${state}`);
}

async function refresh(o) {
  const r = await rest("listholdinvoices", { payment_hash: o.hash });
  const inv = (r.holdinvoices || [])[0];
  if (inv) setState(o, inv.state);
}

async function order(itemId) {
  const item = CATALOG.find((i) => i.id === itemId);
  if (!item) throw new RestError(400, { message: `no such item: ${itemId}` });
  const preimage = randomBytes(32);
  const hash = createHash("sha256").update(preimage).digest("hex");
  const id = nextId++;
  const inv = await rest("holdinvoice", {
    amount_msat: item.sat * 1000,
    description: `Fulgur shop order ${id}: ${item.name}`,
    payment_hash: hash,
  });
  const qr = await QRCode.toString(`lightning:${inv.bolt11}`.toUpperCase(), {
    type: "svg",
    margin: 2,
  });
  const o = {
    id,
    item,
    hash,
    preimage: preimage.toString("hex"),
    bolt11: inv.bolt11,
    qr,
    state: "UNPAID",
    created: Date.now(),
  };
  orders.set(id, o);
  byHash.set(hash, o);
  push("merchant", merchantView(o));
  console.log(`shop: order ${id} (${item.name}) waits for ${hash}`);
  return o;
}

// --- notifications ------------------------------------------------------------------

function follow() {
  const socket = io(REST.origin, {
    extraHeaders: { rune: RUNE },
    ca: CA,
    reconnectionDelayMax: 2000,
  });
  socket.on("connect", () => {
    console.log("shop: following the node's notifications");
    // Whatever changed while we were away.
    for (const o of orders.values()) refresh(o).catch(() => {});
  });
  socket.on("connect_error", (e) => console.error(`shop: notifications: ${e.message}`));
  socket.on("message", (n) => {
    const s = n && n.holdinvoice_state;
    if (!s) return;
    const o = byHash.get(s.payment_hash);
    if (o) setState(o, s.state);
  });
  return socket;
}

// --- HTTP ---------------------------------------------------------------------------

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};
const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'";

function send(res, status, body, type = "application/json") {
  res.writeHead(status, {
    "Content-Type": type,
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
  });
  res.end(typeof body === "string" ? body : JSON.stringify(body));
}

function merchant(req) {
  const given = Buffer.from(String(req.headers["x-merchant-token"] || ""));
  const want = Buffer.from(TOKEN);
  return given.length === want.length && timingSafeEqual(given, want);
}

function events(req, res, key, first) {
  res.writeHead(200, {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    Connection: "keep-alive",
  });
  for (const d of first) res.write(`data: ${JSON.stringify(d)}\n\n`);
  if (!listeners.has(key)) listeners.set(key, new Set());
  listeners.get(key).add(res);
  req.on("close", () => listeners.get(key).delete(res));
}

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > 4096) throw new RestError(413, { message: "request too large" });
    chunks.push(c);
  }
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : {};
}

const PAGES = {
  "/": "index.html",
  "/merchant": "merchant.html",
  "/shop.js": "shop.js",
  "/merchant.js": "merchant.js",
  "/style.css": "style.css",
};

async function handle(req, res) {
  const url = new URL(req.url, "http://shop");
  const path = url.pathname;
  const m = path.match(/^\/api\/orders\/(\d+)(\/(events|deliver|cancel))?$/);
  if (req.method === "GET" && PAGES[path]) {
    const file = PAGES[path];
    return send(res, 200, readFileSync(join(here, "public", file), "utf8"), TYPES[extname(file)]);
  }
  if (req.method === "GET" && path === "/api/catalog") return send(res, 200, CATALOG);
  if (req.method === "POST" && path === "/api/orders") {
    const { item } = await readJson(req);
    const o = await order(item);
    return send(res, 201, customerView(o));
  }
  if (req.method === "GET" && path === "/api/merchant/events") {
    if (url.searchParams.get("token") !== TOKEN) return send(res, 403, { message: "merchant only" });
    return events(req, res, "merchant", [...orders.values()].map(merchantView));
  }
  if (m) {
    const o = orders.get(Number(m[1]));
    if (!o) return send(res, 404, { message: "no such order" });
    const action = m[3];
    if (req.method === "GET" && !action) return send(res, 200, customerView(o));
    if (req.method === "GET" && action === "events") {
      return events(req, res, `order:${o.id}`, [customerView(o)]);
    }
    if (req.method === "POST" && (action === "deliver" || action === "cancel")) {
      if (!merchant(req)) return send(res, 403, { message: "merchant only" });
      if (action === "deliver") await rest("settleholdinvoice", { preimage: o.preimage });
      else await rest("cancelholdinvoice", { payment_hash: o.hash });
      // The notification will say so too; the reply already carries the new state.
      await refresh(o);
      return send(res, 200, merchantView(o));
    }
  }
  return send(res, 404, { message: "not found" });
}

const server = createServer((req, res) => {
  handle(req, res).catch((e) => {
    const status = e instanceof RestError ? (e.status >= 400 && e.status < 500 ? e.status : 502) : 500;
    console.error(`shop: ${req.method} ${req.url}: ${e.message}`);
    if (!res.headersSent) send(res, status, { message: e.message, code: e.code });
    else res.end();
  });
});

follow();
server.listen(Number(env.SHOP_PORT || 0), env.SHOP_HOST || "127.0.0.1", () => {
  const { address, port } = server.address();
  console.log(`shop: listening on http://${address}:${port}/`);
  console.log(`shop: merchant page http://${address}:${port}/merchant#${TOKEN}`);
});

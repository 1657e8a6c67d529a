// The checkout, end to end in headless Chromium (Debian's, driven by playwright-core):
// a customer orders, pays from another node with `fulgur-cli pay`, sees the payment held;
// the merchant clicks Deliver and the customer sees it paid, with the preimage `pay`
// returned as proof. Then a second order is cancelled: the customer sees the refund and
// `pay` fails. Run by tests/py/test_checkout.py, which starts the network and the shop.
//
// Environment: SHOP_URL, MERCHANT_URL (with its #token), PAY_CMD (a JSON array: the
// fulgur-cli command line for the payer, before `pay`), SCREENSHOTS (a directory, optional),
// CHROMIUM (default /usr/bin/chromium).

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = process.env;
const SHOP = env.SHOP_URL;
const MERCHANT = env.MERCHANT_URL;
const PAY = JSON.parse(env.PAY_CMD);
const SHOTS = env.SCREENSHOTS;
// Generous: a held payment waits for the merchant, who is this script.
const TIMEOUT = 60_000;

if (SHOTS) mkdirSync(SHOTS, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Starts `fulgur-cli pay bolt11`; resolves with its exit code and output when it ends. */
function pay(bolt11) {
  const child = spawn(PAY[0], [...PAY.slice(1), "pay", bolt11], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  const done = new Promise((resolve) =>
    child.on("close", (code) => resolve({ code, out, err })),
  );
  return { child, done, running: () => child.exitCode === null };
}

async function state(page, s) {
  await page.waitForSelector(`#status[data-state="${s}"]`, { timeout: TIMEOUT });
}

async function order(customer, item) {
  await customer.goto(SHOP);
  await customer.click(`button[data-item="${item}"]`);
  await state(customer, "UNPAID");
  const bolt11 = await customer.inputValue("#bolt11");
  check(bolt11.startsWith("lnbcrt"), `order for ${item} shows a bolt11 invoice`);
  const qr = await customer.locator("#qr svg").count();
  check(qr === 1, "the invoice is shown as a QR code");
  return bolt11;
}

async function held(merchant, customer, payment) {
  await state(customer, "ACCEPTED");
  check(
    (await customer.textContent("#status")).includes("held"),
    "the customer sees the payment held",
  );
  const row = merchant.locator('tr[data-state="ACCEPTED"]');
  await row.locator("button.deliver").waitFor({ timeout: TIMEOUT });
  check(await row.locator("button.cancel").isVisible(), "the merchant sees Deliver and Cancel");
  check(payment.running(), "the payer's pay is still waiting while the payment is held");
  return row;
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
  const customer = await context.newPage();
  const merchant = await context.newPage();
  for (const p of [customer, merchant]) {
    p.on("pageerror", (e) => {
      throw new Error(`page error: ${e.message}`);
    });
  }

  // 1. Deliver.
  await customer.goto(SHOP);
  await customer.waitForSelector('button[data-item="coffee"]');
  await shot(customer, "1-shop");
  const bolt11 = await order(customer, "coffee");
  await shot(customer, "2-invoice");
  await merchant.goto(MERCHANT);
  const first = pay(bolt11);
  const row = await held(merchant, customer, first);
  await shot(customer, "3-held");
  await shot(merchant, "4-merchant-held");
  await row.locator("button.deliver").click();
  await state(customer, "SETTLED");
  const proof = (await customer.textContent("#preimage")).trim();
  check(/^[0-9a-f]{64}$/.test(proof), "the customer sees the proof of payment");
  await shot(customer, "5-paid");
  await merchant.waitForSelector('tr[data-state="SETTLED"]', { timeout: TIMEOUT });
  await shot(merchant, "6-merchant-paid");
  const r1 = await first.done;
  check(r1.code === 0, `pay succeeded (exit ${r1.code}: ${r1.err.trim()})`);
  const result = JSON.parse(r1.out);
  check(result.status === "complete", "pay says complete");
  check(result.payment_preimage === proof, "pay returned the preimage the page shows");

  // 2. Cancel.
  const bolt11b = await order(customer, "sticker");
  const second = pay(bolt11b);
  const row2 = await held(merchant, customer, second);
  await row2.locator("button.cancel").click();
  await state(customer, "CANCELLED");
  check(
    (await customer.textContent("#status")).includes("refunded"),
    "the customer sees the refund",
  );
  await shot(customer, "7-cancelled");
  const r2 = await second.done;
  check(r2.code !== 0, `pay failed after the cancel (exit ${r2.code})`);
  console.log("checkout: all checks passed");
} finally {
  await browser.close();
}

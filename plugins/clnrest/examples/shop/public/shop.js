// The customer's page: order an item, pay its hold invoice, follow the order live.
const TEXT = {
  UNPAID: "Waiting for your payment…",
  ACCEPTED: "Payment held. The merchant is preparing your order; it is only taken when it ships.",
  SETTLED: "Paid. Your order is on its way.",
  CANCELLED: "Order cancelled. Your payment was refunded: the held payment went back to your wallet.",
};

const $ = (id) => document.getElementById(id);

async function catalog() {
  const items = await (await fetch("/api/catalog")).json();
  for (const item of items) {
    const card = document.createElement("article");
    card.className = "item";
    const name = document.createElement("h3");
    name.textContent = item.name;
    const price = document.createElement("p");
    price.textContent = `${item.sat.toLocaleString("en")} sat`;
    const buy = document.createElement("button");
    buy.type = "button";
    buy.textContent = "Order";
    buy.dataset.item = item.id;
    buy.addEventListener("click", () => order(item.id));
    card.append(name, price, buy);
    $("catalog").append(card);
  }
}

function show(o) {
  $("order").hidden = false;
  $("catalog").hidden = true;
  $("order-title").textContent = `Order ${o.id}: ${o.item} (${o.amount_sat.toLocaleString("en")} sat)`;
  $("status").textContent = TEXT[o.state] || o.state;
  $("status").dataset.state = o.state;
  $("invoice").hidden = o.state !== "UNPAID";
  if (o.state === "UNPAID") {
    $("qr").innerHTML = o.qr;
    $("bolt11").value = o.bolt11;
  }
  $("proof").hidden = !o.preimage;
  if (o.preimage) $("preimage").textContent = o.preimage;
}

async function order(item) {
  const r = await fetch("/api/orders", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ item }),
  });
  const o = await r.json();
  if (!r.ok) {
    alert(`Cannot order: ${o.message}`);
    return;
  }
  history.replaceState(null, "", `/?order=${o.id}`);
  follow(o);
}

function follow(o) {
  show(o);
  const events = new EventSource(`/api/orders/${o.id}/events`);
  events.onmessage = (e) => {
    const now = JSON.parse(e.data);
    show(now);
    if (now.state === "SETTLED" || now.state === "CANCELLED") events.close();
  };
}

$("copy").addEventListener("click", () => navigator.clipboard.writeText($("bolt11").value));

const resume = new URLSearchParams(location.search).get("order");
if (resume) {
  fetch(`/api/orders/${resume}`).then((r) => (r.ok ? r.json().then(follow) : catalog()));
} else {
  catalog();
}

// The merchant's page: every order live; a held payment can be delivered (settled) or
// cancelled (refunded). The token comes after '#' in the URL the shop printed.
const token = location.hash.slice(1);
const rows = new Map();
const LABEL = { UNPAID: "waiting for payment", ACCEPTED: "held", SETTLED: "paid", CANCELLED: "cancelled" };

async function act(id, action, button) {
  button.disabled = true;
  const r = await fetch(`/api/orders/${id}/${action}`, {
    method: "POST",
    headers: { "X-Merchant-Token": token },
  });
  if (!r.ok) {
    const e = await r.json();
    alert(`${action} failed: ${e.message}`);
    button.disabled = false;
  }
}

function render(o) {
  let tr = rows.get(o.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.id = `order-${o.id}`;
    rows.set(o.id, tr);
    document.querySelector("#orders tbody").prepend(tr);
  }
  tr.dataset.state = o.state;
  tr.replaceChildren();
  const cell = (text) => {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
    return td;
  };
  cell(String(o.id));
  cell(o.item);
  cell(`${o.amount_sat.toLocaleString("en")} sat`);
  cell(LABEL[o.state] || o.state).className = `state ${o.state.toLowerCase()}`;
  const actions = cell("");
  if (o.state === "ACCEPTED") {
    for (const [action, text] of [["deliver", "Deliver"], ["cancel", "Cancel"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = text;
      b.className = action;
      b.addEventListener("click", () => act(o.id, action, b));
      actions.append(b);
    }
  }
}

const events = new EventSource(`/api/merchant/events?token=${encodeURIComponent(token)}`);
events.onmessage = (e) => render(JSON.parse(e.data));

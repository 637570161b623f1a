// The demo shop (development only): the dev application's catalog with a Buy button per item,
// the buyer's orders with their live status, and a banner for a pending payment; every call to
// portex-pay goes through the JavaScript client (clients/js) over the Mini App edge, which
// verifies the buyer and prices every item itself. The page only remembers which orders it
// placed for each user (localStorage); their status always comes from the edge (getTgPayment,
// owner-only), polled while an order can still change.
import { PortexPay } from "./portex-pay.js";
import { sandboxWebApp } from "./webapp.js";

const POLL_MS = 1000;
const PENDING = 0; // OrderResult.status: waiting for payment
const PAID = 1; // can still become refunded (5); the other statuses never change again
const $ = (id) => document.getElementById(id);
const state = {
  catalog: null,
  userId: null,
  portex: null,
  generation: 0,
  timer: null,
  refreshing: false, // a refresh is running: another request marks the page dirty instead
  dirty: false, // asked for while one ran: one more run follows it
  final: new Map(), // the user's orders in a final state (cancelled, expired, failed, refunded)
};

function ordersKey() {
  return `portex-demo:orders:${state.catalog.application_id}:${state.userId}`;
}

function placedOrders() {
  return JSON.parse(localStorage.getItem(ordersKey()) ?? "[]");
}

function rememberOrder(orderId) {
  localStorage.setItem(ordersKey(), JSON.stringify([orderId, ...placedOrders()]));
}

function showError(error) {
  // The edge's reason first: it is what a Mini App would branch on.
  $("error").textContent = error.reason ? `${error.reason}: ${error.description}` : String(error);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function renderItems() {
  $("items").replaceChildren(
    ...state.catalog.items.map((item) => {
      const row = document.createElement("li");
      row.dataset.item = item.key;
      const text = document.createElement("span");
      text.textContent = `${item.title}: ${item.description} (${item.amount} Stars)`;
      const buy = document.createElement("button");
      buy.type = "button";
      buy.textContent = "Buy";
      buy.onclick = () => buyItem(item);
      row.append(text, buy);
      return row;
    }),
  );
}

function orderRow(order) {
  const row = document.createElement("tr");
  row.dataset.order = String(order.tg_payment_id);
  const status = order.state; // "paid", "pending", "expired", ...
  for (const [text, kind] of [
    [`#${order.tg_payment_id}`, "id"],
    [order.title, "title"],
    [String(order.amount), "amount"],
    [status, `status status-${status}`],
  ]) {
    const cell = document.createElement("td");
    cell.className = kind;
    cell.textContent = text;
    row.append(cell);
  }
  return row;
}

/**
 * Shows every order this page placed for the user, and polls while one may change. Single
 * flight: while a run is in progress (started by a purchase, a closed invoice or the timer) a
 * request only marks the page dirty, and one more run follows the current one.
 */
async function refresh() {
  if (state.refreshing) {
    state.dirty = true;
    return;
  }
  state.refreshing = true;
  try {
    do {
      state.dirty = false;
      await readOrders();
    } while (state.dirty);
  } finally {
    state.refreshing = false;
  }
}

/** One run of refresh(): reads the orders that can still change (a final one keeps its answer). */
async function readOrders() {
  const generation = state.generation;
  const final = state.final; // this user's: switchUser gives the next user a new one
  clearTimeout(state.timer);
  const orders = [];
  let limitedFor = 0; // ms the edge asked us to wait (429): read again then, quietly
  for (const orderId of placedOrders()) {
    const known = final.get(orderId);
    if (known !== undefined) {
      orders.push(known);
      continue;
    }
    try {
      const order = await state.portex.queryOrder(orderId);
      if (order.status !== PENDING && order.status !== PAID) final.set(orderId, order);
      orders.push(order);
    } catch (error) {
      if (error.reason === "RATE_LIMITED") {
        limitedFor = Math.max(limitedFor, (error.retryAfter ?? 1) * 1000);
      } else if (error.reason !== "ORDER_NOT_FOUND") {
        showError(error);
      }
    }
  }
  if (generation !== state.generation) return; // the user changed meanwhile
  if (limitedFor > 0) {
    state.timer = setTimeout(refresh, limitedFor); // a partial list would hide orders
    return;
  }
  $("orders").replaceChildren(...orders.map(orderRow));
  $("no-orders").hidden = orders.length > 0;
  $("resume").hidden = !state.portex.hasPendingPayment();
  if (orders.some((order) => order.status === PENDING)) {
    state.timer = setTimeout(refresh, POLL_MS);
  }
}

function invoiceClosed() {
  refresh();
}

async function buyItem(item) {
  clearError();
  try {
    const payment = await state.portex.pay(
      {
        tg_use_id: String(state.userId),
        amount: item.amount,
        label: item.key,
        title: item.title,
        description: item.description,
      },
      invoiceClosed,
    );
    rememberOrder(payment.tg_payment_id);
    await refresh();
  } catch (error) {
    showError(error);
  }
}

async function resume() {
  clearError();
  try {
    if ((await state.portex.resumePayment(invoiceClosed)) === null) await refresh();
  } catch (error) {
    showError(error);
  }
}

async function switchUser(userId) {
  const generation = ++state.generation;
  clearTimeout(state.timer);
  state.final = new Map();
  clearError();
  $("orders").replaceChildren();
  delete document.body.dataset.user;
  state.userId = userId;
  try {
    // The sandbox's stand-in for Telegram.WebApp (the demo's bot is the sandbox's).
    const webApp = await sandboxWebApp(userId, $("invoice"));
    const portex = new PortexPay({
      endpoint: location.origin,
      appId: state.catalog.application_id,
      webApp,
    });
    await portex.init();
    if (generation !== state.generation) return;
    state.portex = portex;
    document.body.dataset.user = String(userId); // ready for this user
    await refresh();
  } catch (error) {
    showError(error);
  }
}

async function start() {
  state.catalog = await (await fetch("/demo/catalog")).json();
  renderItems();
  const picker = $("user");
  picker.replaceChildren(
    ...state.catalog.users.map((id) => new Option(`user ${id}`, String(id))),
  );
  picker.onchange = () => switchUser(Number(picker.value));
  $("resume-button").onclick = resume;
  await switchUser(Number(picker.value));
}

start().catch(showError);

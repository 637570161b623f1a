/**
 * @file The JS client against a running portex-pay (node's test runner; started, with the
 * service, by tests/e2e/test_js_client.py, which also counts that every test here ran and passed).
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { NETWORK_ERROR, PortexPay, PortexPayError } from "../src/portex-pay.js";
import { deadEndpoint, env, memoryStorage, orderReaching, sandboxWebApp, userOf } from "./sandbox.js";

const SUCCESS = 1;
const PENDING = 0;

/** The seed's PaymentOptions for the catalog item, at its price. */
function book(extra = {}) {
  return { amount: env.price, label: env.item, title: "Book", description: "Magic book", ...extra };
}

/**
 * A client for `user` (one browser profile: `storage`), and its Telegram.WebApp.
 * @param {"alice" | "bob" | "carol"} user
 * @param {{ storage?: ReturnType<typeof memoryStorage>, endpoint?: string, fetch?: typeof fetch }} [options]
 */
function client(user, { storage = memoryStorage(), endpoint = env.endpoint, fetch } = {}) {
  const webApp = sandboxWebApp(env.initData[user]);
  const portex = new PortexPay({ endpoint, appId: env.appId, webApp, storage, fetch });
  return { portex, webApp, storage };
}

/**
 * pay() and the result its callback gets when the invoice closes.
 * @param {PortexPay} portex
 * @param {object} options
 */
async function payAndClose(portex, options) {
  /** @type {(value: import("../src/portex-pay.js").InvoiceClosedResult) => void} */
  let closed = () => {};
  const closing = new Promise((resolve) => (closed = resolve));
  const payment = await portex.pay(/** @type {any} */ (options), closed);
  return { payment, closed: await closing };
}

/**
 * @param {Promise<unknown>} promise
 * @returns {Promise<PortexPayError>}
 */
async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof PortexPayError, `not a PortexPayError: ${error}`);
    return error;
  }
  assert.fail("expected a PortexPayError");
}

test("init() records the user and answers the id the edge verified", async () => {
  const { portex } = client("alice");
  assert.deepEqual(await portex.init(), { tg_use_id: userOf(env.initData.alice) });
});

test("pay() opens the invoice; paid in the sandbox, the order is PAID with the catalog's price", async () => {
  const { portex, webApp } = client("alice");
  await portex.init();
  const { payment, closed } = await payAndClose(portex, book());
  assert.equal(typeof payment.tg_payment_id, "number");
  assert.match(payment.tg_payment_url, /^https:\/\/t\.me\/\$/);
  assert.deepEqual(webApp.opened, [payment.tg_payment_url]);
  assert.deepEqual(closed, { orderId: payment.tg_payment_id, status: "paid" });
  assert.equal(portex.hasPendingPayment(), false);

  const order = await orderReaching(portex, payment.tg_payment_id, SUCCESS);
  assert.equal(order.status, SUCCESS);
  assert.equal(order.status_description, "success");
  assert.equal(order.tg_use_id, userOf(env.initData.alice));
  assert.equal(order.amount, env.price);
  assert.equal(order.label, env.item);
  assert.equal(order.application_id, env.appId);
});

test("a cancelled invoice stays pending across a reload; resumePayment reopens the same order", async () => {
  const profile = memoryStorage();
  const first = client("alice", { storage: profile });
  first.webApp.next = "cancelled";
  const { payment, closed } = await payAndClose(first.portex, book());
  assert.deepEqual(closed, { orderId: payment.tg_payment_id, status: "cancelled" });
  assert.equal(first.portex.hasPendingPayment(), true);
  assert.equal((await first.portex.queryOrder(payment.tg_payment_id)).status, PENDING);

  // The page is reloaded: a new client, the same storage.
  const reloaded = client("alice", { storage: profile });
  await reloaded.portex.init();
  assert.equal(reloaded.portex.hasPendingPayment(), true);
  /** @type {(value: unknown) => void} */
  let resumedClosed = () => {};
  const closing = new Promise((resolve) => (resumedClosed = resolve));
  const resumed = await reloaded.portex.resumePayment(resumedClosed);
  assert.deepEqual(resumed, payment);
  assert.deepEqual(reloaded.webApp.opened, [payment.tg_payment_url]);
  assert.deepEqual(await closing, { orderId: payment.tg_payment_id, status: "paid" });
  assert.equal(reloaded.portex.hasPendingPayment(), false);
  assert.equal((await orderReaching(reloaded.portex, payment.tg_payment_id, SUCCESS)).status, SUCCESS);

  // Nothing is pending any more: there is nothing to resume.
  assert.equal(await reloaded.portex.resumePayment(), null);
  assert.deepEqual(reloaded.webApp.opened, [payment.tg_payment_url]);
});

test("a pending payment that was paid elsewhere is not reopened, and is forgotten", async () => {
  const profile = memoryStorage();
  const { portex, webApp } = client("alice", { storage: profile });
  webApp.next = "failed";
  const { payment, closed } = await payAndClose(portex, book());
  assert.equal(closed.status, "failed");
  assert.equal(portex.hasPendingPayment(), true);
  // Paid in another window (the bot's chat, another device): the edge has the last word.
  const other = client("alice");
  other.webApp.openInvoice(payment.tg_payment_url, () => {});
  await orderReaching(portex, payment.tg_payment_id, SUCCESS);

  assert.equal(await portex.resumePayment(), null);
  assert.equal(portex.hasPendingPayment(), false);
  assert.deepEqual(webApp.opened, [payment.tg_payment_url]); // not reopened
});

test("a price tampered in the options is refused with the catalog's reason; nothing opens", async () => {
  const { portex, webApp } = client("alice");
  const error = await failure(portex.pay(book({ amount: env.price + 1 })));
  assert.equal(error.status, 400);
  assert.equal(error.reason, "PRICE_MISMATCH");
  assert.equal(error.field, "amount");
  assert.ok(error.description.length > 0);
  assert.deepEqual(webApp.opened, []);
  assert.equal(portex.hasPendingPayment(), false);
});

test("another user's order is ORDER_NOT_FOUND; a shared device keeps each user's pending payment apart", async () => {
  const profile = memoryStorage();
  const alice = client("alice", { storage: profile });
  alice.webApp.next = "cancelled";
  const { payment } = await payAndClose(alice.portex, book());

  const bob = client("bob", { storage: profile });
  const error = await failure(bob.portex.queryOrder(payment.tg_payment_id));
  assert.equal(error.status, 404);
  assert.equal(error.reason, "ORDER_NOT_FOUND");
  assert.equal(bob.portex.hasPendingPayment(), false);
  assert.equal(alice.portex.hasPendingPayment(), true);

  // Alice's order planted under Bob's key: the edge will not show it to him, so it is dropped.
  const [aliceKey] = profile.keys();
  profile.setItem(aliceKey.replace(/:\d+$/, `:${userOf(env.initData.bob)}`), profile.getItem(aliceKey) ?? "");
  assert.equal(bob.portex.hasPendingPayment(), true);
  assert.equal(await bob.portex.resumePayment(), null);
  assert.equal(bob.portex.hasPendingPayment(), false);
  assert.deepEqual(bob.webApp.opened, []);
  assert.equal(alice.portex.hasPendingPayment(), true);
});

test("429 carries the edge's reason and Retry-After in seconds", async () => {
  // The limited service allows a burst of 2 calls per user, then about one a 100 s.
  const { portex } = client("carol", { endpoint: env.limitedEndpoint });
  await portex.init();
  await portex.init();
  const error = await failure(portex.init());
  assert.equal(error.status, 429);
  assert.equal(error.reason, "RATE_LIMITED");
  assert.ok(Number.isInteger(error.retryAfter) && /** @type {number} */ (error.retryAfter) > 0, `retryAfter ${error.retryAfter}`);
});

test("no answer at all is a PortexPayError NETWORK_ERROR, after retries with one Idempotency-Key", async () => {
  /** @type {(string | null)[]} */
  const keys = [];
  /** @type {typeof fetch} */
  const recording = (url, init) => {
    keys.push(new Headers(init?.headers).get("Idempotency-Key"));
    return fetch(url, init);
  };
  const { portex, webApp } = client("alice", { endpoint: await deadEndpoint(), fetch: recording });
  const error = await failure(portex.pay(book()));
  assert.equal(error.status, 0);
  assert.equal(error.reason, NETWORK_ERROR);
  assert.equal(keys.length, 3);
  assert.equal(new Set(keys).size, 1);
  assert.ok(keys[0]);
  assert.deepEqual(webApp.opened, []);
  assert.equal(portex.hasPendingPayment(), false);
});

test("a pay() whose answer was lost is retried with the same key and makes one order", async () => {
  /** @type {number[]} */
  const lost = [];
  /** @type {(string | null)[]} */
  const keys = [];
  /** @type {typeof fetch} */
  const losingFirstAnswer = async (url, init) => {
    const response = await fetch(url, init);
    if (String(url).endsWith("/createTgPayment")) {
      keys.push(new Headers(init?.headers).get("Idempotency-Key"));
      if (keys.length === 1) {
        // The server made the order; the connection broke before the answer arrived.
        lost.push((await response.json()).result.tg_payment_id);
        throw new TypeError("fetch failed");
      }
    }
    return response;
  };
  const { portex } = client("bob", { fetch: losingFirstAnswer });
  const payment = await portex.pay(book());
  assert.equal(keys.length, 2);
  assert.equal(keys[0], keys[1]);
  assert.deepEqual([payment.tg_payment_id], lost);

  // The next pay() is a new purchase: a new key, a new order.
  const second = await portex.pay(book());
  assert.notEqual(keys[2], keys[0]);
  assert.notEqual(second.tg_payment_id, payment.tg_payment_id);
});

test("refused initData and an answer that is not the edge's envelope are PortexPayErrors", async () => {
  const forged = env.initData.alice.replace(/hash=[0-9a-f]/, (match) => (match.endsWith("0") ? "hash=1" : "hash=0"));
  const webApp = { ...sandboxWebApp(env.initData.alice), initData: forged };
  const refused = new PortexPay({ endpoint: env.endpoint, appId: env.appId, webApp, storage: memoryStorage() });
  const error = await failure(refused.init());
  assert.equal(error.status, 401);
  assert.equal(error.reason, "INIT_DATA_INVALID");

  // Not portex-pay's /v1/: a plain 404 page.
  const astray = client("alice", { endpoint: `${env.endpoint}/not-here` }).portex;
  const notEdge = await failure(astray.init());
  assert.equal(notEdge.status, 404);
  assert.equal(notEdge.reason, "BAD_RESPONSE");
});

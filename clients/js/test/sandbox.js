/**
 * @file What the client's tests run against, read from the environment that
 * tests/e2e/test_js_client.py sets: a real portex-pay serving the edge, an application selling
 * one catalog item, initData signed by its bot for three users, and the fake Bot API. The only
 * stand-in is Telegram: `sandboxWebApp` plays Telegram.WebApp, its openInvoice paying through the
 * fake Bot API's `/_fake/pay` (pre-checkout, successful_payment) or closing as the user would.
 */
import { createServer } from "node:net";

/** @param {string} name */
function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/e2e/test_js_client.py`);
  return value;
}

export const env = {
  endpoint: required("PORTEX_TEST_ENDPOINT"),
  limitedEndpoint: required("PORTEX_TEST_LIMITED_ENDPOINT"), // PORTEX_EDGE_USER_BURST=2
  appId: required("PORTEX_TEST_APP_ID"),
  telegram: required("PORTEX_TEST_FAKE_TELEGRAM"),
  item: required("PORTEX_TEST_ITEM"),
  price: Number(required("PORTEX_TEST_ITEM_PRICE")),
  initData: {
    alice: required("PORTEX_TEST_INIT_DATA_ALICE"),
    bob: required("PORTEX_TEST_INIT_DATA_BOB"),
    carol: required("PORTEX_TEST_INIT_DATA_CAROL"),
  },
};

/** @param {string} initData */
export function userOf(initData) {
  return JSON.parse(new URLSearchParams(initData).get("user") ?? "null").id;
}

/**
 * Telegram.WebApp for one user. `next` says what the user does with the next invoice opened:
 * "pay" (through the fake Bot API: "paid" when the bot approved pre-checkout, else "failed"),
 * "cancelled" or "failed". `opened` lists every invoice URL opened.
 * @param {string} initData
 */
export function sandboxWebApp(initData) {
  const user = userOf(initData);
  return {
    initData,
    initDataUnsafe: { user: { id: user } },
    /** @type {"pay" | "cancelled" | "failed"} */
    next: "pay",
    /** @type {string[]} */
    opened: [],
    /**
     * @param {string} url
     * @param {(status: string) => void} closed
     */
    openInvoice(url, closed) {
      this.opened.push(url);
      const action = this.next;
      queueMicrotask(async () => closed(action === "pay" ? await payInvoice(url, user) : action));
    },
  };
}

/**
 * @param {string} link
 * @param {number} user
 */
async function payInvoice(link, user) {
  const response = await fetch(`${env.telegram}/_fake/pay`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ link, user_id: user }),
  });
  const answer = await response.json();
  return answer.ok && answer.result.approved ? "paid" : "failed";
}

/** A Web Storage in memory: one "browser profile", shared by the clients of one test. */
export function memoryStorage() {
  const items = new Map();
  return {
    /** @param {string} key */
    getItem: (key) => items.get(key) ?? null,
    /** @param {string} key @param {string} value */
    setItem: (key, value) => void items.set(key, value),
    /** @param {string} key */
    removeItem: (key) => void items.delete(key),
    keys: () => [...items.keys()],
  };
}

/** A loopback URL where nothing listens (a port just released). */
export async function deadEndpoint() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const address = server.address();
  await new Promise((resolve) => server.close(() => resolve(undefined)));
  if (address === null || typeof address === "string") throw new Error("no port");
  return `http://127.0.0.1:${address.port}`;
}

/**
 * Polls queryOrder until the order has `status` (successful_payment reaches portex-pay by webhook
 * after the invoice closes, as in Telegram); the last answer when it never does.
 * @param {import("../src/portex-pay.js").PortexPay} portex
 * @param {number} orderId
 * @param {number} status
 */
export async function orderReaching(portex, orderId, status) {
  let order = await portex.queryOrder(orderId);
  for (let polls = 0; order.status !== status && polls < 100; polls++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    order = await portex.queryOrder(orderId);
  }
  return order;
}

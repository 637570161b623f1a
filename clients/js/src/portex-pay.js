// @ts-check
/**
 * @file The payment part of the Portex Mini-App SDK, for a self-hosted portex-pay.
 *
 * The same names, fields and pending-payment behaviour as the SDK's `portex.pay` (pay, queryOrder,
 * resumePayment, hasPendingPayment, plus init), but the endpoint is a constructor option instead
 * of the SDK's fixed host, so no fetch-rewriting shim is needed. It talks to portex-pay's Mini App
 * edge (`POST {endpoint}/v1/...`, JSON, `X-App-Id` and `X-Tg-InitData` on every call) and opens
 * the invoice with `Telegram.WebApp.openInvoice`. Every failure is a `PortexPayError` carrying the
 * edge's `reason` and `Retry-After`. No runtime dependencies: an ES module for browsers (and Node
 * 18+, which the tests use).
 *
 * The pending payment (created, not yet seen paid) is kept in `storage` (Web Storage:
 * localStorage by default) under a key of the application id and the user, so it survives a
 * reload; resumePayment asks the edge whether it is still payable before reopening it.
 */

/**
 * The SDK's PaymentOptions. In catalog pricing `label` names the merchant's item and `amount`
 * must be its price (or be left out); the edge decides, never the browser.
 * @typedef {object} PaymentOptions
 * @property {string | number} [tg_use_id] Telegram user id; the verified user's when left out.
 * @property {number} [amount] Stars (the SDK's comment says rubles: it is Stars).
 * @property {string} label
 * @property {string} title
 * @property {string} description
 * @property {string} [payload]
 * @property {number} [photo_height]
 * @property {number} [photo_width]
 * @property {number} [photo_size]
 * @property {string} [photo_url]
 * @property {string} [callback_url]
 */

/**
 * The SDK's PaymentResult: the order (`tg_payment_id` is the order id) and its invoice link.
 * @typedef {object} PaymentResult
 * @property {number} tg_payment_id
 * @property {string} tg_payment_url
 */

/**
 * @typedef {'paid' | 'cancelled' | 'failed' | 'pending'} InvoiceStatus
 */

/**
 * The SDK's InvoiceClosedResult, given to pay's and resumePayment's callback.
 * @typedef {object} InvoiceClosedResult
 * @property {number} orderId
 * @property {InvoiceStatus} status
 */

/**
 * @callback InvoiceClosedCallback
 * @param {InvoiceClosedResult} result
 * @returns {unknown}
 */

/**
 * The SDK's OrderResult (numbers as numbers), plus the invoice link and the order's state.
 * `status`: 0 pending, 1 success, 2 cancelled, 3 expired, 4 failed, 5 refunded.
 * @typedef {object} OrderResult
 * @property {number} tg_payment_id
 * @property {string} application_id
 * @property {number} tg_use_id
 * @property {number} amount
 * @property {string} label
 * @property {string} title
 * @property {string} description
 * @property {string} payload
 * @property {number} status
 * @property {string} status_description
 * @property {string} tg_payment_url
 * @property {string} state
 */

/**
 * What the client needs of `Telegram.WebApp`.
 * @typedef {object} WebAppLike
 * @property {string} initData
 * @property {{ user?: { id: number } }} [initDataUnsafe]
 * @property {(url: string, callback: (status: string) => unknown) => unknown} openInvoice
 */

/**
 * What the client needs of Web Storage (localStorage, sessionStorage).
 * @typedef {object} StorageLike
 * @property {(key: string) => string | null} getItem
 * @property {(key: string, value: string) => void} setItem
 * @property {(key: string) => void} removeItem
 */

/**
 * @typedef {object} PortexPayOptions
 * @property {string} endpoint Where portex-pay serves `/v1/`, e.g. "https://pay.example.com".
 * @property {string} appId The application id (`X-App-Id`).
 * @property {WebAppLike} [webApp] Default: `globalThis.Telegram.WebApp`.
 * @property {StorageLike} [storage] Default: `globalThis.localStorage`, else memory only.
 * @property {typeof fetch} [fetch] Default: `globalThis.fetch`.
 */

/**
 * One violation of a bad request: the field and what is wrong with it.
 * @typedef {object} Violation
 * @property {string} field
 * @property {string} description
 */

/** The reason of a request that got no HTTP answer (offline, DNS, refused, CORS refused). */
export const NETWORK_ERROR = "NETWORK_ERROR";
/** The reason of an answer that is not the edge's JSON envelope (a proxy's error page). */
export const BAD_RESPONSE = "BAD_RESPONSE";

/** createTgPayment's attempts when no answer comes (or 503): the Idempotency-Key makes one order. */
const PAY_ATTEMPTS = 3;
const PAY_RETRY_DELAY_MS = 300;
const PENDING_KEY_PREFIX = "portex-pay:pending";
const PAYABLE_STATUS = 0; // OrderResult.status "pending"
const INVOICE_STATUSES = ["paid", "cancelled", "failed", "pending"];

/** A failed call: the edge's envelope, or a network failure (status 0, reason NETWORK_ERROR). */
export class PortexPayError extends Error {
  /**
   * @param {object} details
   * @param {number} details.status HTTP status (0: no answer).
   * @param {string} details.reason The edge's UPPER_SNAKE reason.
   * @param {string} details.description
   * @param {string} [details.field] The first offending field of a bad request.
   * @param {Violation[]} [details.violations] Every offending field of a bad request.
   * @param {number} [details.retryAfter] Seconds to wait (429 and 503 with `Retry-After`).
   * @param {unknown} [details.cause]
   */
  constructor({ status, reason, description, field, violations, retryAfter, cause }) {
    super(`${reason}: ${description}`, cause === undefined ? undefined : { cause });
    this.name = "PortexPayError";
    /** @type {number} */
    this.status = status;
    /** @type {string} */
    this.reason = reason;
    /** @type {string} */
    this.description = description;
    /** @type {string | undefined} */
    this.field = field;
    /** @type {Violation[]} */
    this.violations = violations ?? [];
    /** @type {number | undefined} */
    this.retryAfter = retryAfter;
  }
}

/**
 * `Retry-After` in seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3); undefined if absent.
 * @param {string | null} header
 * @param {number} [now] milliseconds since the epoch
 * @returns {number | undefined}
 */
export function parseRetryAfter(header, now = Date.now()) {
  if (header === null || header.trim() === "") return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - now) / 1000));
}

/**
 * The PortexPayError of a non-2xx answer (or a 2xx one without `ok: true`).
 * @param {Response} response
 * @param {unknown} body the parsed JSON, or undefined when it was not JSON
 * @returns {PortexPayError}
 */
function answerError(response, body) {
  const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
  if (!isEnvelope(body)) {
    const description = `HTTP ${response.status} without the edge's JSON envelope`;
    return new PortexPayError({ status: response.status, reason: BAD_RESPONSE, description, retryAfter });
  }
  return new PortexPayError({
    status: typeof body.error_code === "number" ? body.error_code : response.status,
    reason: typeof body.reason === "string" ? body.reason : BAD_RESPONSE,
    description: typeof body.description === "string" ? body.description : "",
    field: typeof body.field === "string" ? body.field : undefined,
    violations: Array.isArray(body.violations) ? body.violations : undefined,
    retryAfter,
  });
}

/**
 * @param {unknown} body
 * @returns {body is Record<string, any>}
 */
function isEnvelope(body) {
  return typeof body === "object" && body !== null && "ok" in body;
}

/**
 * A fresh Idempotency-Key: a UUID where crypto.randomUUID exists (secure contexts), else 128
 * random bits from getRandomValues (any context), so a key never repeats across pay() calls.
 * @returns {string}
 */
function newIdempotencyKey() {
  const crypto = globalThis.crypto;
  if (typeof crypto?.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** @returns {StorageLike} a storage that lives as long as the page (no localStorage). */
function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, value),
    removeItem: (key) => void items.delete(key),
  };
}

/** @returns {StorageLike} */
function defaultStorage() {
  try {
    // Reading localStorage throws where storage is blocked (sandboxed frames, some privacy modes).
    const storage = /** @type {any} */ (globalThis).localStorage;
    if (storage) return storage;
  } catch {
    // fall through: remember the pending payment for this page only
  }
  return memoryStorage();
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The Portex SDK's payment interface over a portex-pay you host. */
export class PortexPay {
  /** @type {string} */ #endpoint;
  /** @type {string} */ #appId;
  /** @type {WebAppLike} */ #webApp;
  /** @type {StorageLike} */ #storage;
  /** @type {typeof fetch} */ #fetch;
  /** @type {number | undefined} the user id the edge verified (init) */ #verifiedUser;

  /** @param {PortexPayOptions} options */
  constructor({ endpoint, appId, webApp, storage, fetch }) {
    if (!endpoint) throw new TypeError("PortexPay: endpoint is required");
    if (!appId) throw new TypeError("PortexPay: appId is required");
    const telegram = /** @type {any} */ (globalThis).Telegram;
    const app = webApp ?? telegram?.WebApp;
    if (!app) throw new TypeError("PortexPay: no webApp given and no Telegram.WebApp");
    const fetchFunction = fetch ?? globalThis.fetch;
    if (!fetchFunction) throw new TypeError("PortexPay: no fetch given and none global");
    this.#endpoint = endpoint.replace(/\/+$/, "");
    this.#appId = appId;
    this.#webApp = app;
    this.#storage = storage ?? defaultStorage();
    // Called unbound, browsers' fetch throws "Illegal invocation".
    this.#fetch = fetchFunction.bind(globalThis);
  }

  /** The Telegram.WebApp this client uses (as the SDK's `portex.webApp`). */
  get webApp() {
    return this.#webApp;
  }

  /**
   * Records the user (`saveTgUser`) and learns who the edge verified them to be.
   * @returns {Promise<{ tg_use_id: number }>}
   */
  async init() {
    const result = await this.#call("saveTgUser", {});
    this.#verifiedUser = result.tg_use_id;
    return result;
  }

  /**
   * Creates the order and opens its invoice. Resolves once the invoice is open; `callback` gets
   * {orderId, status} when it closes. Until the order is seen paid it is the pending payment.
   * @param {PaymentOptions} options
   * @param {InvoiceClosedCallback} [callback]
   * @returns {Promise<PaymentResult>}
   */
  async pay(options, callback) {
    const key = newIdempotencyKey(); // one per pay(): its retries make one order
    /** @type {PaymentResult} */
    const created = await this.#retried(() =>
      this.#call("createTgPayment", options, { "Idempotency-Key": key }),
    );
    const payment = { tg_payment_id: created.tg_payment_id, tg_payment_url: created.tg_payment_url };
    // Remembered before the invoice opens: a reload while it is open can still resume it.
    this.#storage.setItem(this.#pendingKey(), JSON.stringify(payment));
    this.#open(payment, callback);
    return payment;
  }

  /**
   * The order as the edge sees it now (only the user who placed it may read it).
   * @param {number | string} orderId
   * @returns {Promise<OrderResult>}
   */
  async queryOrder(orderId) {
    return this.#call("getTgPayment", { tg_payment_id: orderId });
  }

  /**
   * Whether a payment was created and not seen paid (kept across reloads in `storage`).
   * @returns {boolean}
   */
  hasPendingPayment() {
    return this.#pending() !== null;
  }

  /**
   * Reopens the pending payment's invoice when the edge says it is still payable; otherwise
   * forgets it (paid, cancelled, expired, failed, or not this user's) and resolves null.
   * @param {InvoiceClosedCallback} [callback]
   * @returns {Promise<PaymentResult | null>}
   */
  async resumePayment(callback) {
    const pending = this.#pending();
    if (pending === null) return null;
    const order = await this.#payableOrder(pending.tg_payment_id);
    if (order === null) {
      this.#storage.removeItem(this.#pendingKey());
      return null;
    }
    const payment = { tg_payment_id: order.tg_payment_id, tg_payment_url: order.tg_payment_url };
    this.#open(payment, callback);
    return payment;
  }

  /**
   * @param {number} orderId
   * @returns {Promise<OrderResult | null>} the order when it can still be paid
   */
  async #payableOrder(orderId) {
    try {
      const order = await this.queryOrder(orderId);
      return order.status === PAYABLE_STATUS && order.tg_payment_url ? order : null;
    } catch (error) {
      // Another user's order answers exactly like a missing one: neither can be resumed here.
      if (error instanceof PortexPayError && error.reason === "ORDER_NOT_FOUND") return null;
      throw error; // offline, rate-limited: still pending, try again later
    }
  }

  /**
   * Opens the invoice; when it closes, reports the status to the edge, forgets the payment once
   * paid, then calls back.
   * @param {PaymentResult} payment
   * @param {InvoiceClosedCallback} [callback]
   */
  #open(payment, callback) {
    this.#webApp.openInvoice(payment.tg_payment_url, async (closedStatus) => {
      const status = /** @type {InvoiceStatus} */ (
        INVOICE_STATUSES.includes(closedStatus) ? closedStatus : "failed"
      );
      if (status === "paid") this.#storage.removeItem(this.#pendingKey());
      try {
        await this.#call("reportInvoiceClosed", { tg_payment_id: payment.tg_payment_id, status });
      } catch {
        // The report is informational (an event for the merchant): the buyer's callback matters more.
      }
      callback?.({ orderId: payment.tg_payment_id, status });
    });
  }

  /** @returns {PaymentResult | null} */
  #pending() {
    const stored = this.#storage.getItem(this.#pendingKey());
    if (stored === null) return null;
    try {
      const payment = JSON.parse(stored);
      return typeof payment?.tg_payment_id === "number" ? payment : null;
    } catch {
      return null; // not ours (or damaged): nothing to resume
    }
  }

  /**
   * Per application and user: two apps, or two accounts on one device, never share a pending
   * payment. The user is the one init() verified; before init(), Telegram's unsigned copy of
   * the same id (every read is checked against the signed initData by the edge anyway).
   * @returns {string}
   */
  #pendingKey() {
    const user = this.#verifiedUser ?? this.#webApp.initDataUnsafe?.user?.id ?? "unknown";
    return `${PENDING_KEY_PREFIX}:${this.#appId}:${user}`;
  }

  /**
   * Repeats `attempt` when no answer came or the service was unavailable (503).
   * @template T
   * @param {() => Promise<T>} attempt
   * @returns {Promise<T>}
   */
  async #retried(attempt) {
    for (let tried = 1; ; tried++) {
      try {
        return await attempt();
      } catch (error) {
        const retryable =
          error instanceof PortexPayError && (error.reason === NETWORK_ERROR || error.status === 503);
        if (!retryable || tried >= PAY_ATTEMPTS) throw error;
        await sleep(((error.retryAfter ?? 0) * 1000) || PAY_RETRY_DELAY_MS * tried);
      }
    }
  }

  /**
   * POSTs `body` to the edge's `route`; the envelope's result, or a PortexPayError.
   * @param {string} route
   * @param {object} body
   * @param {Record<string, string>} [headers]
   * @returns {Promise<any>}
   */
  async #call(route, body, headers = {}) {
    let response;
    try {
      response = await this.#fetch(`${this.#endpoint}/v1/${route}`, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          "X-App-Id": this.#appId,
          "X-Tg-InitData": this.#webApp.initData,
          ...headers,
        },
        body: JSON.stringify(body),
      });
    } catch (cause) {
      const description = `no answer from ${this.#endpoint}: ${String(cause)}`;
      throw new PortexPayError({ status: 0, reason: NETWORK_ERROR, description, cause });
    }
    let answer;
    try {
      answer = await response.json();
    } catch {
      answer = undefined;
    }
    if (!response.ok || !isEnvelope(answer) || answer.ok !== true) throw answerError(response, answer);
    return answer.result;
  }
}

/**
 * `Retry-After` in seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3); undefined if absent.
 * @param {string | null} header
 * @param {number} [now] milliseconds since the epoch
 * @returns {number | undefined}
 */
export function parseRetryAfter(header: string | null, now?: number): number | undefined;
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
export const NETWORK_ERROR: "NETWORK_ERROR";
/** The reason of an answer that is not the edge's JSON envelope (a proxy's error page). */
export const BAD_RESPONSE: "BAD_RESPONSE";
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
    constructor({ status, reason, description, field, violations, retryAfter, cause }: {
        status: number;
        reason: string;
        description: string;
        field?: string | undefined;
        violations?: Violation[] | undefined;
        retryAfter?: number | undefined;
        cause?: unknown;
    });
    /** @type {number} */
    status: number;
    /** @type {string} */
    reason: string;
    /** @type {string} */
    description: string;
    /** @type {string | undefined} */
    field: string | undefined;
    /** @type {Violation[]} */
    violations: Violation[];
    /** @type {number | undefined} */
    retryAfter: number | undefined;
}
/** The Portex SDK's payment interface over a portex-pay you host. */
export class PortexPay {
    /** @param {PortexPayOptions} options */
    constructor({ endpoint, appId, webApp, storage, fetch }: PortexPayOptions);
    /** The Telegram.WebApp this client uses (as the SDK's `portex.webApp`). */
    get webApp(): WebAppLike;
    /**
     * Records the user (`saveTgUser`) and learns who the edge verified them to be.
     * @returns {Promise<{ tg_use_id: number }>}
     */
    init(): Promise<{
        tg_use_id: number;
    }>;
    /**
     * Creates the order and opens its invoice. Resolves once the invoice is open; `callback` gets
     * {orderId, status} when it closes. Until the order is seen paid it is the pending payment.
     * @param {PaymentOptions} options
     * @param {InvoiceClosedCallback} [callback]
     * @returns {Promise<PaymentResult>}
     */
    pay(options: PaymentOptions, callback?: InvoiceClosedCallback): Promise<PaymentResult>;
    /**
     * The order as the edge sees it now (only the user who placed it may read it).
     * @param {number | string} orderId
     * @returns {Promise<OrderResult>}
     */
    queryOrder(orderId: number | string): Promise<OrderResult>;
    /**
     * Whether a payment was created and not seen paid (kept across reloads in `storage`).
     * @returns {boolean}
     */
    hasPendingPayment(): boolean;
    /**
     * Reopens the pending payment's invoice when the edge says it is still payable; otherwise
     * forgets it (paid, cancelled, expired, failed, or not this user's) and resolves null.
     * @param {InvoiceClosedCallback} [callback]
     * @returns {Promise<PaymentResult | null>}
     */
    resumePayment(callback?: InvoiceClosedCallback): Promise<PaymentResult | null>;
    #private;
}
/**
 * The SDK's PaymentOptions. In catalog pricing `label` names the merchant's item and `amount`
 * must be its price (or be left out); the edge decides, never the browser.
 */
export type PaymentOptions = {
    /**
     * Telegram user id; the verified user's when left out.
     */
    tg_use_id?: string | number | undefined;
    /**
     * Stars (the SDK's comment says rubles: it is Stars).
     */
    amount?: number | undefined;
    label: string;
    title: string;
    description: string;
    payload?: string | undefined;
    photo_height?: number | undefined;
    photo_width?: number | undefined;
    photo_size?: number | undefined;
    photo_url?: string | undefined;
    callback_url?: string | undefined;
};
/**
 * The SDK's PaymentResult: the order (`tg_payment_id` is the order id) and its invoice link.
 */
export type PaymentResult = {
    tg_payment_id: number;
    tg_payment_url: string;
};
export type InvoiceStatus = "paid" | "cancelled" | "failed" | "pending";
/**
 * The SDK's InvoiceClosedResult, given to pay's and resumePayment's callback.
 */
export type InvoiceClosedResult = {
    orderId: number;
    status: InvoiceStatus;
};
export type InvoiceClosedCallback = (result: InvoiceClosedResult) => unknown;
/**
 * The SDK's OrderResult (numbers as numbers), plus the invoice link and the order's state.
 * `status`: 0 pending, 1 success, 2 cancelled, 3 expired, 4 failed, 5 refunded.
 */
export type OrderResult = {
    tg_payment_id: number;
    application_id: string;
    tg_use_id: number;
    amount: number;
    label: string;
    title: string;
    description: string;
    payload: string;
    status: number;
    status_description: string;
    tg_payment_url: string;
    state: string;
};
/**
 * What the client needs of `Telegram.WebApp`.
 */
export type WebAppLike = {
    initData: string;
    initDataUnsafe?: {
        user?: {
            id: number;
        };
    } | undefined;
    openInvoice: (url: string, callback: (status: string) => unknown) => unknown;
};
/**
 * What the client needs of Web Storage (localStorage, sessionStorage).
 */
export type StorageLike = {
    getItem: (key: string) => string | null;
    setItem: (key: string, value: string) => void;
    removeItem: (key: string) => void;
};
export type PortexPayOptions = {
    /**
     * Where portex-pay serves `/v1/`, e.g. "https://pay.example.com".
     */
    endpoint: string;
    /**
     * The application id (`X-App-Id`).
     */
    appId: string;
    /**
     * Default: `globalThis.Telegram.WebApp`.
     */
    webApp?: WebAppLike | undefined;
    /**
     * Default: `globalThis.localStorage`, else memory only.
     */
    storage?: StorageLike | undefined;
    /**
     * Default: `globalThis.fetch`.
     */
    fetch?: typeof fetch | undefined;
};
/**
 * One violation of a bad request: the field and what is wrong with it.
 */
export type Violation = {
    field: string;
    description: string;
};

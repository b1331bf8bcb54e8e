/**
 * `verifyWebhook`: check a webhook the broker sent to the app's server (Standard Webhooks 1.0)
 * and return its typed payload. Web Crypto only, so it runs in Node 20+ and edge runtimes.
 */

import type { UploadStatus } from "./errors.js";

/** The event types the broker sends. A newer broker may add more: answer 2xx and ignore them. */
export type WebhookEventType =
  | "upload.created"
  | "upload.finalized"
  | "upload.rejected"
  | "upload.expired"
  | "upload.deleted"
  | "webhook.test";

/** The upload as it was after the change the event reports (no URLs: fetch those if needed). */
export interface WebhookUpload {
  id: string;
  owner: string;
  policy: string;
  status: UploadStatus;
  size: number | null;
  content_type: string;
  sha256: string | null;
  metadata: Record<string, string>;
  /** The upload's history id: it only grows, so an event with a lower `seq` than the last one
   * applied for this upload is older and can be dropped. */
  seq: number;
}

export interface WebhookEvent {
  type: WebhookEventType;
  /** When the change happened (ISO 8601), not when this attempt was sent. */
  timestamp: string;
  data: WebhookUpload;
}

/**
 * Why a webhook was refused. `code`:
 * - `ERR_WEBHOOK_MISSING_HEADER`: no `webhook-id`, `webhook-timestamp` or `webhook-signature`;
 * - `ERR_WEBHOOK_BAD_TIMESTAMP`: `webhook-timestamp` is not Unix seconds;
 * - `ERR_WEBHOOK_TIMESTAMP_TOO_OLD` / `ERR_WEBHOOK_TIMESTAMP_TOO_NEW`: outside the tolerance
 *   (a replayed request, or a clock far off);
 * - `ERR_WEBHOOK_BAD_SIGNATURE`: no `v1` signature matches (tampered body, wrong secret);
 * - `ERR_WEBHOOK_BAD_PAYLOAD`: signed, but not the JSON of an event;
 * - `ERR_WEBHOOK_BAD_SECRET`: the secret given to `verifyWebhook` is not `whsec_<base64>`
 *   (a setup mistake on the receiving side, not the sender's).
 */
export class WebhookVerificationError extends Error {
  override readonly name = "WebhookVerificationError";

  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Five minutes, as Standard Webhooks recommends. */
export const WEBHOOK_TOLERANCE_SECONDS = 300;

export interface VerifyWebhookOptions {
  /** How far `webhook-timestamp` may be from now, either way. Default 300 s. */
  toleranceSeconds?: number;
  /** The current time (tests). Default `new Date()`. */
  now?: Date;
}

/** Headers as fetch's `Headers` (route handlers) or as a plain object (Node's `req.headers`). */
export type WebhookHeaders =
  | Pick<Headers, "get">
  | Record<string, string | string[] | undefined>;

/**
 * Verify a webhook from the broker and return its payload, or throw a
 * `WebhookVerificationError`. `rawBody` is the request body exactly as received
 * (`await request.text()`, or its bytes): JSON parsed and serialized again would not match the
 * signature. `secret` is the endpoint's `whsec_...` secret.
 */
export async function verifyWebhook(
  rawBody: string | Uint8Array | ArrayBuffer,
  headers: WebhookHeaders,
  secret: string,
  options: VerifyWebhookOptions = {},
): Promise<WebhookEvent> {
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  const key = await importSecret(secret);
  checkTimestamp(timestamp, options);

  const body =
    typeof rawBody === "string"
      ? encoder.encode(rawBody)
      : rawBody instanceof Uint8Array
        ? rawBody
        : new Uint8Array(rawBody);
  const prefix = encoder.encode(`${id}.${timestamp}.`);
  const signed = new Uint8Array(prefix.length + body.length);
  signed.set(prefix);
  signed.set(body, prefix.length);
  const expected = new Uint8Array(await crypto.subtle.sign("HMAC", key, signed));

  // Several signatures while the secret is being rotated: any `v1` one may match.
  const matched = signatures.split(" ").some((entry) => {
    const [version, encoded] = entry.split(",", 2);
    if (version !== "v1" || encoded === undefined) return false;
    const candidate = fromBase64(encoded);
    return candidate !== null && constantTimeEqual(candidate, expected);
  });
  if (!matched) {
    throw new WebhookVerificationError(
      "ERR_WEBHOOK_BAD_SIGNATURE",
      "no webhook-signature matches the body with this secret",
    );
  }
  return parseEvent(body);
}

const encoder = new TextEncoder();

function header(headers: WebhookHeaders, name: string): string {
  let value: string | string[] | null | undefined;
  if (typeof headers.get === "function") {
    value = (headers as Pick<Headers, "get">).get(name);
  } else {
    const record = headers as Record<string, string | string[] | undefined>;
    const key = Object.keys(record).find((candidate) => candidate.toLowerCase() === name);
    value = key === undefined ? undefined : record[key];
  }
  const text = Array.isArray(value) ? value.join(" ") : value;
  if (!text) {
    throw new WebhookVerificationError("ERR_WEBHOOK_MISSING_HEADER", `no ${name} header`);
  }
  return text.trim();
}

async function importSecret(secret: string): Promise<CryptoKey> {
  const bytes = fromBase64(secret.startsWith("whsec_") ? secret.slice(6) : secret);
  if (bytes === null || bytes.length === 0) {
    throw new WebhookVerificationError(
      "ERR_WEBHOOK_BAD_SECRET",
      "the webhook secret is not whsec_ followed by base64",
    );
  }
  return crypto.subtle.importKey("raw", bytes, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
}

function checkTimestamp(timestamp: string, options: VerifyWebhookOptions): void {
  if (!/^\d{1,15}$/.test(timestamp)) {
    throw new WebhookVerificationError(
      "ERR_WEBHOOK_BAD_TIMESTAMP",
      "webhook-timestamp is not Unix seconds",
    );
  }
  const tolerance = options.toleranceSeconds ?? WEBHOOK_TOLERANCE_SECONDS;
  const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const age = now - Number(timestamp);
  if (age > tolerance) {
    throw new WebhookVerificationError(
      "ERR_WEBHOOK_TIMESTAMP_TOO_OLD",
      `webhook-timestamp is ${age} s old (tolerance ${tolerance} s)`,
    );
  }
  if (-age > tolerance) {
    throw new WebhookVerificationError(
      "ERR_WEBHOOK_TIMESTAMP_TOO_NEW",
      `webhook-timestamp is ${-age} s ahead (tolerance ${tolerance} s)`,
    );
  }
}

function parseEvent(body: Uint8Array): WebhookEvent {
  let event: unknown;
  try {
    event = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    throw new WebhookVerificationError("ERR_WEBHOOK_BAD_PAYLOAD", "the body is not JSON");
  }
  const { type, data } = (event ?? {}) as { type?: unknown; data?: unknown };
  if (typeof type !== "string" || typeof data !== "object" || data === null) {
    throw new WebhookVerificationError(
      "ERR_WEBHOOK_BAD_PAYLOAD",
      "the body is not an event: no type or data",
    );
  }
  return event as WebhookEvent;
}

/** Standard base64 (padding optional), or null when `text` is not base64. */
function fromBase64(text: string): Uint8Array<ArrayBuffer> | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  try {
    return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
  } catch {
    return null;
  }
}

/** Compares every byte whatever the first difference, so timing does not leak the HMAC. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false; // lengths are public: an HMAC-SHA256 is 32 bytes
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a[i] ^ b[i];
  return difference === 0;
}

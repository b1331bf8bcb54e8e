/** Errors of the upload flow: the broker's JSON errors, storage's XML errors, final states. */

import type { components } from "./schema.js";

export type UploadRecord = components["schemas"]["Upload"];
export type UploadStatus = UploadRecord["status"];

/**
 * Every failure of `uploadFile` except an abort (which rejects with the signal's reason) and a
 * request the browser refused to make (a CORS or network failure of a broker call, which
 * rejects with fetch's own `TypeError`).
 *
 * - `status`: the HTTP status of the answer that failed, or 0 when there was none (a network
 *   error talking to storage, a timeout, or an upload that ended rejected/expired/deleted).
 * - `code`: the broker's error code (`ERR_QUOTA_EXCEEDED`, ...), storage's
 *   (`SignatureDoesNotMatch`, ...), or the client's own: `ERR_NETWORK`, `ERR_UPLOAD_REJECTED`,
 *   `ERR_UPLOAD_EXPIRED`, `ERR_UPLOAD_DELETED`, `ERR_FINALIZE_TIMEOUT`, `ERR_ETAG_NOT_EXPOSED`,
 *   `ERR_BAD_PART_PLAN`, `ERR_HTTP_<status>`.
 * - `record`: the upload record, when the upload ended in a state other than `finalized`.
 */
export class BrokerUploadError extends Error {
  override readonly name = "BrokerUploadError";

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    readonly record?: UploadRecord,
  ) {
    super(message);
  }
}

/** The error for a broker answer that is not 2xx: its `{"error": {code, message, details}}`. */
export function errorFromBody(status: number, body: unknown): BrokerUploadError {
  const error = (body as { error?: unknown } | null)?.error as
    | { code?: unknown; message?: unknown; details?: unknown }
    | undefined;
  if (error && typeof error.code === "string") {
    const message = typeof error.message === "string" ? error.message : error.code;
    return new BrokerUploadError(status, error.code, message, error.details);
  }
  const text = typeof body === "string" && body ? `: ${body.slice(0, 200)}` : "";
  return new BrokerUploadError(
    status,
    `ERR_HTTP_${status}`,
    `the broker answered ${status}${text}`,
  );
}

/** The error for a storage (S3/MinIO) answer that is not 2xx: `<Error><Code>..</Code>..`. */
export function storageError(status: number, text: string): BrokerUploadError {
  const field = (name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(text)?.[1];
  const code = field("Code") ?? `ERR_HTTP_${status}`;
  const message = field("Message") ?? `storage answered ${status}`;
  return new BrokerUploadError(status, code, `storage: ${message}`);
}

/** The error for an upload that ended in a state other than `finalized`. */
export function finalStateError(record: UploadRecord): BrokerUploadError {
  const why = record.reject_reason ? ` (${record.reject_reason})` : "";
  return new BrokerUploadError(
    0,
    `ERR_UPLOAD_${record.status.toUpperCase()}`,
    `upload ${record.id} ended ${record.status}${why}`,
    record.reject_reason ?? undefined,
    record,
  );
}

/** An AbortError, for an abort whose signal has no reason of its own. */
export function abortError(): Error {
  return typeof DOMException === "function"
    ? new DOMException("the upload was aborted", "AbortError")
    : Object.assign(new Error("the upload was aborted"), { name: "AbortError" });
}

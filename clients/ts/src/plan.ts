/** The pure arithmetic of an upload: part ranges, signing batches, retries, headers, events. */

import { BrokerUploadError, type UploadStatus } from "./errors.js";

export const FINAL_STATUSES: ReadonlySet<UploadStatus> = new Set([
  "finalized",
  "rejected",
  "expired",
  "deleted",
]);

/** Bytes [start, end) of part `n` (1-based) of a file of `size` bytes cut in `partSize`. */
export function partRange(n: number, partSize: number, size: number): [number, number] {
  const start = (n - 1) * partSize;
  if (n < 1 || !Number.isInteger(n) || start >= size) {
    throw new RangeError(`part ${n} is outside a file of ${size} bytes in parts of ${partSize}`);
  }
  return [start, Math.min(start + partSize, size)];
}

/** Check the broker's part plan against the file: `partCount` parts of `partSize` bytes. */
export function checkPlan(size: number, partSize: number, partCount: number): void {
  if (partSize < 1 || Math.ceil(size / partSize) !== partCount) {
    throw new BrokerUploadError(
      0,
      "ERR_BAD_PART_PLAN",
      `a file of ${size} bytes does not make ${partCount} parts of ${partSize} bytes`,
    );
  }
}

/** The part numbers to sign together when part `first` needs a URL: it and the next ones,
 * up to `batch` parts in all, skipping those already signed (`signed(k)`). */
export function signingBatch(
  first: number,
  count: number,
  batch: number,
  signed: (n: number) => boolean = () => false,
): number[] {
  const numbers = [first];
  for (let n = first + 1; n <= count && n < first + batch; n++) {
    if (!signed(n)) numbers.push(n);
  }
  return numbers;
}

/** Milliseconds to wait before retry number `attempt` (1, 2, ...): exponential from `baseMs`,
 * capped at `maxMs`, with jitter between half and all of it (`random` in [0, 1)). */
export function backoffDelay(
  attempt: number,
  { baseMs = 500, maxMs = 8_000 }: { baseMs?: number; maxMs?: number } = {},
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** (attempt - 1));
  return Math.round(ceiling * (0.5 + random() / 2));
}

/** Whether a failed request may succeed if sent again: network errors, 408, 429, 5xx. */
export function isRetryable(error: unknown): boolean {
  if (!(error instanceof BrokerUploadError)) return false;
  const { status } = error;
  return (
    (status === 0 && error.code === "ERR_NETWORK") ||
    status === 408 ||
    status === 429 ||
    status >= 500
  );
}

// Headers a browser sets itself and refuses from scripts (the Fetch standard's forbidden
// request-header names that a presigner could return).
const FORBIDDEN_HEADERS = new Set(["content-length", "host", "connection", "expect", "date"]);

/** The signed headers to send from a browser: all but those it sets itself. The signature
 * still holds: the browser sends the real `content-length`, which is the signed one. */
export function requestHeaders(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(headers).filter(([name]) => !FORBIDDEN_HEADERS.has(name.toLowerCase())),
  );
}

export interface StatusEvent {
  id: string;
  status: UploadStatus;
  at: string;
}

/** The `data` of an SSE `status` message: `{"id", "status", "at"}`; null if it is not one. */
export function parseStatusEvent(data: string): StatusEvent | null {
  try {
    const value = JSON.parse(data) as Partial<StatusEvent>;
    const known = ["pending", ...FINAL_STATUSES] as string[];
    if (
      typeof value?.id === "string" &&
      typeof value.status === "string" &&
      known.includes(value.status)
    ) {
      return { id: value.id, status: value.status, at: String(value.at ?? "") };
    }
  } catch {
    // not JSON
  }
  return null;
}

/** Sums the bytes sent of each part (or of the single request) and reports the total. */
export class Progress {
  #sent = 0;
  #byPart = new Map<number, number>();

  constructor(
    readonly total: number,
    private readonly report?: (sent: number, total: number) => void,
  ) {}

  get sent(): number {
    return this.#sent;
  }

  /** Part `part` has `loaded` bytes sent (back to 0 when it is sent again). */
  set(part: number, loaded: number): void {
    const before = this.#byPart.get(part) ?? 0;
    if (loaded === before && this.#byPart.has(part)) return;
    this.#sent += loaded - before;
    this.#byPart.set(part, loaded);
    this.report?.(this.#sent, this.total);
  }
}

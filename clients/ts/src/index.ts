/**
 * A typed client for the broker: `createBrokerClient` for every route (openapi-fetch over the
 * generated `paths`), and `uploadFile` for the whole flow: create the upload, send the bytes
 * straight to storage (PUT, form POST or multipart), wait until the broker has finalized it;
 * and `verifyWebhook` for the app's server, to check the webhooks the broker sends it.
 */

import createClient, { type Client } from "openapi-fetch";

import {
  BrokerUploadError,
  abortError,
  errorFromBody,
  finalStateError,
  storageError,
  type UploadRecord,
  type UploadStatus,
} from "./errors.js";
import {
  FINAL_STATUSES,
  Progress,
  backoffDelay,
  checkPlan,
  isRetryable,
  parseStatusEvent,
  partRange,
  requestHeaders,
  signingBatch,
} from "./plan.js";
import type { components, paths } from "./schema.js";
import { sendToStorage, sleep } from "./transport.js";

export { BrokerUploadError, type UploadRecord, type UploadStatus } from "./errors.js";
export * from "./plan.js";
export type { components, paths } from "./schema.js";
export * from "./webhook.js";

type Schemas = components["schemas"];
export type CreatedUpload = Schemas["CreatedUpload"];
export type SignedPart = Schemas["SignedPart"];
export type BrokerClient = Client<paths> & { readonly baseUrl: string };

export interface BrokerClientOptions {
  /** The broker's base URL, e.g. `https://broker.example.com`. */
  baseUrl: string;
  /** A bearer JWT whose `sub` owns the uploads. */
  token: string;
  fetch?: (input: Request) => Promise<Response>;
}

export function createBrokerClient({ baseUrl, token, fetch }: BrokerClientOptions): BrokerClient {
  const base = baseUrl.replace(/\/+$/, "");
  const client = createClient<paths>({
    baseUrl: base,
    headers: { Authorization: `Bearer ${token}` },
    ...(fetch ? { fetch } : {}),
  });
  return Object.assign(client, { baseUrl: base });
}

export interface UploadOptions {
  policy?: string;
  filename?: string;
  contentType?: string;
  metadata?: Record<string, string>;
  /** Ask for a form POST instead of a PUT (ignored when the upload goes multipart). */
  method?: "PUT" | "POST";
  /** Send in parts even below the broker's multipart threshold. */
  multipart?: boolean;
  /** Parts in flight at once (multipart). Default 4. */
  parallel?: number;
  /** Retries of each request to storage after a network error, 408, 429 or 5xx. Default 3. */
  retries?: number;
  /** Bytes sent so far (it goes down when a part is sent again). */
  onProgress?: (sent: number, total: number) => void;
  /** The new upload, as soon as the broker created it (its id, events_url, ...). */
  onCreated?: (upload: CreatedUpload) => void;
  /** Each status the broker reports while the client waits, and how it learnt it. */
  onStatus?: (status: UploadStatus, via: "events" | "poll") => void;
  /** How long to wait for a final state once the bytes are sent. Default 120 s. */
  finalizeTimeoutMs?: number;
  signal?: AbortSignal;
}

/** Upload `file` and resolve with its record once the broker has finalized it. */
export async function uploadFile(
  client: BrokerClient,
  file: Blob & { name?: string },
  options: UploadOptions = {},
): Promise<UploadRecord> {
  const { signal } = options;
  signal?.throwIfAborted();
  const created = call<CreatedUpload>(
    await client.POST("/v1/uploads", {
      body: {
        filename: options.filename || file.name || "blob",
        content_type: options.contentType || file.type || "application/octet-stream",
        size: file.size,
        metadata: options.metadata ?? {},
        policy: options.policy ?? null,
        method: options.method ?? "PUT",
        multipart: options.multipart ?? false,
      },
      signal,
    }),
  );
  options.onCreated?.(created);
  const upload = created.upload;
  const progress = new Progress(file.size, options.onProgress);
  try {
    if (upload?.method === "multipart") {
      checkPlan(file.size, upload.part_size, upload.part_count);
      await sendParts(client, created.id, upload, file, progress, options);
    } else if (upload) {
      const body = upload.method === "PUT" ? file : form(upload.fields, file, created.filename);
      const headers = upload.method === "PUT" ? requestHeaders(upload.headers) : {};
      await retrying(options, async (attempt) => {
        // A retry checks first: an earlier attempt may have arrived before the connection broke.
        if (attempt > 0 && (await getRecord(client, created.id, signal)).status !== "pending") {
          return;
        }
        const response = await sendToStorage({
          method: upload.method,
          url: upload.url,
          headers,
          body,
          signal,
          onProgress: (loaded) => progress.set(0, Math.min(loaded, file.size)),
        });
        if (response.status === 412 && attempt > 0) return; // if-none-match: it is stored
        if (!response.ok) throw storageError(response.status, response.text);
      });
      progress.set(0, file.size);
    }
  } catch (error) {
    // Aborted: the user gave up on this upload, so delete it at once (for multipart this
    // aborts it in storage and frees its parts) rather than leave it pending, counted in
    // the quota, until the reconciler expires it.
    if (signal?.aborted) {
      await client.DELETE("/v1/uploads/{upload_id}", params(created.id)).catch(() => {});
    }
    throw error;
  }
  return waitForFinal(client, created, options);
}

function form(fields: Record<string, string>, file: Blob, filename: string): FormData {
  const body = new FormData();
  for (const [name, value] of Object.entries(fields)) body.append(name, value);
  body.append("file", file, filename);
  return body;
}

/** Sign parts a batch at a time just before they are sent, PUT `parallel` at once, each with
 * retries, keep each ETag, then complete. */
async function sendParts(
  client: BrokerClient,
  id: string,
  { part_size: partSize, part_count: partCount }: Schemas["MultipartOut"],
  file: Blob,
  progress: Progress,
  options: UploadOptions,
): Promise<void> {
  const parallel = Math.max(1, Math.min(options.parallel ?? 4, partCount));
  // One failed part stops the others: their requests are aborted too.
  const stop = new AbortController();
  const onAbort = () => stop.abort(options.signal?.reason ?? abortError());
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const signal = stop.signal;
  const signed = new Map<number, Promise<SignedPart>>();
  const urlFor = (n: number, fresh: boolean): Promise<SignedPart> => {
    if (fresh || !signed.has(n)) {
      const numbers = fresh
        ? [n]
        : signingBatch(n, partCount, Math.min(2 * parallel, 1000), (k) => signed.has(k));
      const batch = client
        .POST("/v1/uploads/{upload_id}/parts", {
          ...params(id),
          body: { part_numbers: numbers },
          signal,
        })
        .then((answer) => call<Schemas["SignedParts"]>(answer).parts);
      for (const k of numbers) {
        const part = batch.then((parts) => parts.find((p) => p.part_number === k)!);
        part.catch(() => {}); // rejections are seen by the part's sender, if it still runs
        signed.set(k, part);
      }
    }
    const part = signed.get(n)!;
    signed.delete(n);
    return part;
  };

  const etags: string[] = [];
  let next = 1;
  const worker = async () => {
    while (next <= partCount && !signal.aborted) {
      const n = next++;
      const [start, end] = partRange(n, partSize, file.size);
      etags[n - 1] = await retrying({ ...options, signal }, async (attempt) => {
        const part = await urlFor(n, attempt > 0);
        progress.set(n, 0);
        const response = await sendToStorage({
          method: "PUT",
          url: part.url,
          headers: requestHeaders(part.headers),
          body: file.slice(start, end),
          signal,
          onProgress: (loaded) => progress.set(n, loaded),
        });
        if (!response.ok) throw storageError(response.status, response.text);
        const etag = response.header("ETag");
        if (!etag) {
          throw new BrokerUploadError(
            0,
            "ERR_ETAG_NOT_EXPOSED",
            "storage's CORS does not expose ETag",
          );
        }
        progress.set(n, end - start);
        return etag;
      });
    }
  };
  try {
    await Promise.all(
      Array.from({ length: parallel }, () =>
        worker().catch((error: unknown) => {
          stop.abort(error);
          throw error;
        }),
      ),
    );
    const parts = etags.map((etag, i) => ({ part_number: i + 1, etag }));
    call(
      await client.POST("/v1/uploads/{upload_id}/complete", {
        ...params(id),
        body: { parts },
        signal,
      }),
    );
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/** Wait for a final state: over Server-Sent Events where EventSource exists, else by polling. */
async function waitForFinal(client: BrokerClient, created: CreatedUpload, options: UploadOptions) {
  const { signal } = options;
  const deadline = Date.now() + (options.finalizeTimeoutMs ?? 120_000);
  const final =
    typeof EventSource === "function"
      ? await watchEvents(`${client.baseUrl}${created.events_url}`, deadline, options)
      : null;
  let record = await getRecord(client, created.id, signal);
  for (let attempt = 0; !final && !FINAL_STATUSES.has(record.status); attempt++) {
    if (Date.now() >= deadline) break;
    await sleep(Math.min(100 * 2 ** attempt, 1_000), signal);
    const status = record.status;
    record = await getRecord(client, created.id, signal);
    if (record.status !== status) options.onStatus?.(record.status, "poll");
  }
  if (record.status === "finalized") return record;
  if (record.status === "pending") {
    throw new BrokerUploadError(0, "ERR_FINALIZE_TIMEOUT", `upload ${created.id} is still pending`);
  }
  throw finalStateError(record);
}

/** The final status the stream reports; null if the stream cannot be opened (poll instead). */
function watchEvents(url: string, deadline: number, options: UploadOptions) {
  const { signal } = options;
  return new Promise<UploadStatus | null>((resolve, reject) => {
    const source = new EventSource(url);
    const timer = setTimeout(() => done(() => resolve(null)), Math.max(0, deadline - Date.now()));
    const onAbort = () => done(() => reject(signal?.reason ?? abortError()));
    const done = (settle: () => void) => {
      source.close();
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      settle();
    };
    source.addEventListener("status", (message) => {
      const event = parseStatusEvent((message as MessageEvent<string>).data);
      if (!event) return;
      options.onStatus?.(event.status, "events");
      if (FINAL_STATUSES.has(event.status)) done(() => resolve(event.status));
    });
    // A dropped stream reconnects by itself (resuming after Last-Event-ID); a refused one
    // (expired token, an error answer) is CLOSED for good.
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) done(() => resolve(null));
    };
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
  });
}

async function getRecord(
  client: BrokerClient,
  id: string,
  signal?: AbortSignal,
): Promise<UploadRecord> {
  return call<UploadRecord>(await client.GET("/v1/uploads/{upload_id}", { ...params(id), signal }));
}

function params(id: string) {
  return { params: { path: { upload_id: id } } };
}

/** The body of a 2xx answer, or the broker's error as a BrokerUploadError. */
function call<T>(answer: { data?: unknown; error?: unknown; response: Response }): T {
  if (!answer.response.ok) throw errorFromBody(answer.response.status, answer.error);
  return answer.data as T;
}

/** Run `attempt` until it succeeds, a failure is not worth retrying, or retries run out. */
async function retrying<T>(
  options: Pick<UploadOptions, "retries" | "signal">,
  attempt: (n: number) => Promise<T>,
): Promise<T> {
  const retries = options.retries ?? 3;
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (error) {
      if (n >= retries || options.signal?.aborted || !isRetryable(error)) throw error;
      await sleep(backoffDelay(n + 1), options.signal);
    }
  }
}

/** Requests to storage: XMLHttpRequest in browsers (it reports upload progress, fetch does
 * not), fetch elsewhere (Node); both abortable. */

import { abortError, BrokerUploadError } from "./errors.js";

export interface StorageRequest {
  method: "PUT" | "POST";
  url: string;
  headers?: Record<string, string>;
  body: Blob | FormData;
  signal?: AbortSignal;
  /** Bytes of the body sent so far. */
  onProgress?: (loaded: number) => void;
}

export interface StorageResponse {
  status: number;
  ok: boolean;
  header(name: string): string | null;
  text: string;
}

export function sendToStorage(request: StorageRequest): Promise<StorageResponse> {
  return typeof XMLHttpRequest === "function" ? sendXhr(request) : sendFetch(request);
}

function networkError(request: StorageRequest): BrokerUploadError {
  const host = new URL(request.url).host;
  return new BrokerUploadError(0, "ERR_NETWORK", `network error on ${request.method} to ${host}`);
}

function sendXhr(request: StorageRequest): Promise<StorageResponse> {
  const { signal } = request;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? abortError());
    const xhr = new XMLHttpRequest();
    const onAbort = () => xhr.abort();
    const settle = (result: () => void) => {
      signal?.removeEventListener("abort", onAbort);
      result();
    };
    xhr.open(request.method, request.url);
    for (const [name, value] of Object.entries(request.headers ?? {})) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (event) => request.onProgress?.(event.loaded);
    xhr.onload = () =>
      settle(() =>
        resolve({
          status: xhr.status,
          ok: xhr.status >= 200 && xhr.status < 300,
          header: (name) => xhr.getResponseHeader(name),
          text: xhr.responseText,
        }),
      );
    xhr.onerror = () => settle(() => reject(networkError(request)));
    xhr.ontimeout = xhr.onerror;
    xhr.onabort = () => settle(() => reject(signal?.reason ?? abortError()));
    signal?.addEventListener("abort", onAbort, { once: true });
    xhr.send(request.body);
  });
}

async function sendFetch(request: StorageRequest): Promise<StorageResponse> {
  let response: Response;
  try {
    response = await fetch(request.url, {
      method: request.method,
      headers: request.headers,
      body: request.body,
      signal: request.signal,
    });
  } catch (error) {
    if (request.signal?.aborted) throw request.signal.reason ?? error;
    throw networkError(request);
  }
  // fetch has no upload progress: the caller counts the whole body once the answer is in.
  const text = await response.text();
  return {
    status: response.status,
    ok: response.ok,
    header: (name) => response.headers.get(name),
    text,
  };
}

/** Wait `ms`, or reject with the abort reason as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? abortError());
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason ?? abortError());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

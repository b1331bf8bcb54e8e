// uploadFile's flow against an in-memory fake of the broker and of storage (a stubbed global
// fetch): no network. Node has neither XMLHttpRequest nor EventSource, so this is the Node
// path (fetch, polling); the browser path runs against the real services in
// tests/e2e/test_browser_uploads.py.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import { BrokerUploadError, createBrokerClient, uploadFile } from "../src/index.js";

const BROKER = "http://broker.test";
const STORAGE = "http://storage.test";

interface Seen {
  method: string;
  url: URL;
  headers: Headers;
  body: Uint8Array;
  form?: Array<[string, string]>;
}

class FakeBroker {
  seen: Seen[] = [];
  status = "pending";
  rejectReason: string | null = null;
  finalizeWith = "finalized";
  failParts = new Map<number, number>(); // part number -> 503s before it succeeds
  hangParts = false;
  instructions: Record<string, unknown> = {};
  createError: { status: number; body: unknown } | null = null;
  stored = new Map<number, Uint8Array>();

  record() {
    return {
      id: "u1",
      status: this.status,
      filename: "f.bin",
      content_type: "application/octet-stream",
      size: 10,
      reject_reason: this.rejectReason,
    };
  }

  fetch = async (input: Request | string | URL, init?: RequestInit): Promise<Response> => {
    const request = input instanceof Request ? input : new Request(input, init);
    const url = new URL(request.url);
    const contentType = request.headers.get("content-type") ?? "";
    let body = new Uint8Array();
    let form: Array<[string, string]> | undefined;
    if (contentType.startsWith("multipart/form-data")) {
      const data = await request.formData();
      form = [...data.entries()].map(([name, value]) => [
        name,
        typeof value === "string" ? value : `<file ${value.size}>`,
      ]);
      const file = data.get("file");
      if (file instanceof Blob) body = new Uint8Array(await file.arrayBuffer());
    } else if (request.body) {
      body = new Uint8Array(await request.arrayBuffer());
    }
    this.seen.push({ method: request.method, url, headers: request.headers, body, form });
    const json = (status: number, value: unknown) =>
      new Response(JSON.stringify(value), {
        status,
        headers: { "content-type": "application/json" },
      });
    const route = `${request.method} ${url.origin}${url.pathname}`;
    if (route === `POST ${BROKER}/v1/uploads`) {
      if (this.createError) return json(this.createError.status, this.createError.body);
      return json(201, { ...this.record(), upload: this.instructions, events_url: "/e?token=t" });
    }
    if (route === `GET ${BROKER}/v1/uploads/u1`) return json(200, this.record());
    if (route === `DELETE ${BROKER}/v1/uploads/u1`) {
      this.status = "deleted";
      return json(200, this.record());
    }
    if (route === `POST ${BROKER}/v1/uploads/u1/parts`) {
      const { part_numbers } = JSON.parse(new TextDecoder().decode(body));
      const parts = part_numbers.map((n: number) => ({
        part_number: n,
        url: `${STORAGE}/part?n=${n}`,
        headers: { "content-length": "4" },
        expires_at: "2030-01-01T00:00:00Z",
      }));
      return json(200, { parts });
    }
    if (route === `POST ${BROKER}/v1/uploads/u1/complete`) {
      this.status = this.finalizeWith;
      return json(200, this.record());
    }
    if (route === `PUT ${STORAGE}/part`) {
      const n = Number(url.searchParams.get("n"));
      if (this.hangParts) return new Promise(() => {}); // until aborted (below)
      const failures = this.failParts.get(n) ?? 0;
      if (failures > 0) {
        this.failParts.set(n, failures - 1);
        return new Response("<Error><Code>SlowDown</Code></Error>", { status: 503 });
      }
      this.stored.set(n, body);
      return new Response(null, { status: 200, headers: { ETag: `"etag-${n}"` } });
    }
    if (route === `PUT ${STORAGE}/object` || route === `POST ${STORAGE}/`) {
      this.stored.set(0, body);
      this.status = this.finalizeWith;
      this.rejectReason = this.finalizeWith === "rejected" ? "size_mismatch" : null;
      return new Response(null, { status: request.method === "PUT" ? 200 : 204 });
    }
    return json(404, { error: { code: "ERR_NOT_FOUND", message: route } });
  };
}

const bytes = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
const original = globalThis.fetch;
let broker: FakeBroker;

beforeEach(() => {
  broker = new FakeBroker();
  // Hanging requests end when their signal aborts, as a real fetch does.
  globalThis.fetch = ((input: Request | string | URL, init?: RequestInit) => {
    const signal = input instanceof Request ? input.signal : init?.signal;
    return Promise.race([
      broker.fetch(input, init),
      new Promise<never>((_, reject) => {
        signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
      }),
    ]);
  }) as typeof fetch;
});

afterEach(() => {
  globalThis.fetch = original;
});

const client = () => createBrokerClient({ baseUrl: `${BROKER}/`, token: "jwt" });

describe("uploadFile", () => {
  it("PUTs with the signed headers but content-length, then polls to finalized", async () => {
    broker.instructions = {
      method: "PUT",
      url: `${STORAGE}/object`,
      headers: { "content-type": "text/plain", "content-length": "10", "if-none-match": "*" },
    };
    const progress: number[] = [];
    const statuses: string[] = [];
    const record = await uploadFile(client(), new Blob([bytes], { type: "text/plain" }), {
      filename: "f.txt",
      onProgress: (sent, total) => progress.push(sent, total),
      onStatus: (status, via) => statuses.push(`${status} ${via}`),
    });
    assert.equal(record.status, "finalized");
    const [create, put] = broker.seen;
    assert.equal(create.headers.get("authorization"), "Bearer jwt");
    assert.deepEqual(JSON.parse(new TextDecoder().decode(create.body)), {
      filename: "f.txt",
      content_type: "text/plain",
      size: 10,
      metadata: {},
      policy: null,
      method: "PUT",
      multipart: false,
    });
    assert.equal(put.method, "PUT");
    assert.equal(put.headers.get("authorization"), null); // storage never sees the token
    assert.equal(put.headers.get("if-none-match"), "*");
    assert.equal(put.headers.get("content-type"), "text/plain");
    assert.deepEqual(put.body, bytes);
    assert.deepEqual(progress, [10, 10]);
    assert.deepEqual(statuses, []); // finalized before the first poll: no change to report
  });

  it("POSTs the form fields first and then the file", async () => {
    broker.instructions = {
      method: "POST",
      url: `${STORAGE}/`,
      fields: { key: "uploads/u1", policy: "p", "x-amz-signature": "s" },
    };
    await uploadFile(client(), new Blob([bytes]), { method: "POST", filename: "f.bin" });
    const post = broker.seen[1];
    assert.deepEqual(post.form, [
      ["key", "uploads/u1"],
      ["policy", "p"],
      ["x-amz-signature", "s"],
      ["file", "<file 10>"],
    ]);
    assert.deepEqual(post.body, bytes);
  });

  it("sends parts in parallel, signs in batches, retries a failed part, completes", async () => {
    broker.instructions = { method: "multipart", upload_id: "m", part_size: 4, part_count: 3 };
    broker.failParts.set(2, 1);
    let last = 0;
    const record = await uploadFile(client(), new Blob([bytes]), {
      parallel: 2,
      onProgress: (sent) => (last = sent),
    });
    assert.equal(record.status, "finalized");
    const signing = broker.seen.filter((s) => s.url.pathname.endsWith("/parts"));
    const batches = signing.map((s) => JSON.parse(new TextDecoder().decode(s.body)).part_numbers);
    // One batch, then part 2 signed afresh for its retry.
    assert.deepEqual(batches, [[1, 2, 3], [2]]);
    assert.deepEqual([...broker.stored.keys()].sort(), [1, 2, 3]);
    assert.deepEqual(broker.stored.get(3), bytes.slice(8));
    const complete = broker.seen.find((s) => s.url.pathname.endsWith("/complete"))!;
    assert.deepEqual(JSON.parse(new TextDecoder().decode(complete.body)), {
      parts: [1, 2, 3].map((n) => ({ part_number: n, etag: `"etag-${n}"` })),
    });
    assert.equal(last, 10);
  });

  it("gives up on a part after its retries and does not complete", async () => {
    broker.instructions = { method: "multipart", upload_id: "m", part_size: 4, part_count: 3 };
    broker.failParts.set(1, 99);
    await assert.rejects(
      uploadFile(client(), new Blob([bytes]), { retries: 1 }),
      (error: unknown) =>
        error instanceof BrokerUploadError && error.status === 503 && error.code === "SlowDown",
    );
    assert.ok(!broker.seen.some((s) => s.url.pathname.endsWith("/complete")));
  });

  it("aborts a multipart upload: requests end and the upload is deleted", async () => {
    broker.instructions = { method: "multipart", upload_id: "m", part_size: 4, part_count: 3 };
    broker.hangParts = true;
    const controller = new AbortController();
    const upload = uploadFile(client(), new Blob([bytes]), { signal: controller.signal });
    while (!broker.seen.some((s) => s.url.origin === STORAGE))
      await new Promise((r) => setTimeout(r, 5));
    controller.abort();
    await assert.rejects(upload, { name: "AbortError" });
    assert.equal(broker.status, "deleted");
    assert.equal(broker.seen.at(-1)?.method, "DELETE");
  });

  it("rejects with the broker's error", async () => {
    broker.createError = {
      status: 413,
      body: {
        error: { code: "ERR_UPLOAD_TOO_LARGE", message: "too large", details: { max_size: 5 } },
      },
    };
    await assert.rejects(uploadFile(client(), new Blob([bytes])), {
      name: "BrokerUploadError",
      status: 413,
      code: "ERR_UPLOAD_TOO_LARGE",
      details: { max_size: 5 },
    });
  });

  it("rejects when the upload ends rejected", async () => {
    broker.instructions = { method: "PUT", url: `${STORAGE}/object`, headers: {} };
    broker.finalizeWith = "rejected";
    await assert.rejects(uploadFile(client(), new Blob([bytes])), {
      code: "ERR_UPLOAD_REJECTED",
      message: "upload u1 ended rejected (size_mismatch)",
    });
  });
});

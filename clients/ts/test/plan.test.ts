import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  BrokerUploadError,
  Progress,
  backoffDelay,
  checkPlan,
  isRetryable,
  parseStatusEvent,
  partRange,
  requestHeaders,
  signingBatch,
} from "../src/index.js";

const MiB = 1024 * 1024;

describe("partRange", () => {
  it("cuts whole parts and a shorter last one", () => {
    const size = 12 * MiB + 7;
    assert.deepEqual(partRange(1, 5 * MiB, size), [0, 5 * MiB]);
    assert.deepEqual(partRange(2, 5 * MiB, size), [5 * MiB, 10 * MiB]);
    assert.deepEqual(partRange(3, 5 * MiB, size), [10 * MiB, size]);
  });

  it("covers every byte exactly once", () => {
    for (const [size, partSize] of [
      [1, 5],
      [5, 5],
      [6, 5],
      [30 * MiB, 5 * MiB],
      [30 * MiB + 1, 5 * MiB],
    ]) {
      const count = Math.ceil(size / partSize);
      let expected = 0;
      for (let n = 1; n <= count; n++) {
        const [start, end] = partRange(n, partSize, size);
        assert.equal(start, expected);
        assert.ok(end > start && end - start <= partSize);
        expected = end;
      }
      assert.equal(expected, size);
    }
  });

  it("refuses parts outside the file", () => {
    assert.throws(() => partRange(0, 5, 10), RangeError);
    assert.throws(() => partRange(3, 5, 10), RangeError);
    assert.throws(() => partRange(1.5, 5, 10), RangeError);
  });
});

describe("checkPlan", () => {
  it("accepts the broker's plan and refuses one that does not fit the file", () => {
    checkPlan(30 * MiB, 5 * MiB, 6);
    checkPlan(30 * MiB + 1, 5 * MiB, 7);
    assert.throws(
      () => checkPlan(30 * MiB, 5 * MiB, 7),
      (error: unknown) => error instanceof BrokerUploadError && error.code === "ERR_BAD_PART_PLAN",
    );
    assert.throws(() => checkPlan(10, 0, 1), BrokerUploadError);
  });
});

describe("signingBatch", () => {
  it("signs the asked part and the next ones, up to the batch size", () => {
    assert.deepEqual(signingBatch(1, 20, 8), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(signingBatch(9, 10, 8), [9, 10]);
    assert.deepEqual(signingBatch(10, 10, 8), [10]);
  });

  it("skips parts already signed", () => {
    const signed = new Set([3, 4]);
    assert.deepEqual(
      signingBatch(2, 20, 4, (n) => signed.has(n)),
      [2, 5],
    );
  });
});

describe("backoffDelay", () => {
  it("doubles from the base up to the cap", () => {
    const top = (attempt: number) => backoffDelay(attempt, {}, () => 0.999999);
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(top), [500, 1000, 2000, 4000, 8000, 8000, 8000]);
  });

  it("jitters between half and all of the step", () => {
    assert.equal(
      backoffDelay(3, {}, () => 0),
      1000,
    );
    assert.equal(
      backoffDelay(3, {}, () => 0.5),
      1500,
    );
    assert.equal(
      backoffDelay(2, { baseMs: 100, maxMs: 150 }, () => 0),
      75,
    );
    for (let i = 0; i < 100; i++) {
      const delay = backoffDelay(2);
      assert.ok(delay >= 500 && delay <= 1000, String(delay));
    }
  });
});

describe("isRetryable", () => {
  const error = (status: number, code = "X") => new BrokerUploadError(status, code, "m");
  it("retries network errors, 408, 429 and 5xx", () => {
    assert.ok(isRetryable(error(0, "ERR_NETWORK")));
    for (const status of [408, 429, 500, 502, 503, 504]) assert.ok(isRetryable(error(status)));
  });
  it("does not retry refusals, final states, aborts or foreign errors", () => {
    for (const status of [400, 401, 403, 404, 409, 412, 413, 422]) {
      assert.ok(!isRetryable(error(status)), String(status));
    }
    assert.ok(!isRetryable(error(0, "ERR_UPLOAD_REJECTED")));
    assert.ok(!isRetryable(new DOMException("aborted", "AbortError")));
    assert.ok(!isRetryable(new TypeError("Failed to fetch")));
  });
});

describe("requestHeaders", () => {
  it("drops the headers a browser sets itself, whatever their case, and keeps the rest", () => {
    const signed = {
      "content-length": "10485760",
      "Content-Type": "application/octet-stream",
      "if-none-match": "*",
      "x-amz-checksum-sha256": "abc=",
      Host: "minio:9000",
    };
    assert.deepEqual(requestHeaders(signed), {
      "Content-Type": "application/octet-stream",
      "if-none-match": "*",
      "x-amz-checksum-sha256": "abc=",
    });
    assert.deepEqual(requestHeaders({ "Content-Length": "5" }), {});
  });
});

describe("parseStatusEvent", () => {
  it("reads the broker's status messages", () => {
    const data = '{"id": "6f1c", "status": "finalized", "at": "2025-01-01 00:00:00+00:00"}';
    assert.deepEqual(parseStatusEvent(data), {
      id: "6f1c",
      status: "finalized",
      at: "2025-01-01 00:00:00+00:00",
    });
  });
  it("ignores anything else", () => {
    assert.equal(parseStatusEvent("not json"), null);
    assert.equal(parseStatusEvent("null"), null);
    assert.equal(parseStatusEvent('{"id": "x", "status": "weird"}'), null);
    assert.equal(parseStatusEvent('{"status": "finalized"}'), null);
  });
});

describe("Progress", () => {
  it("sums parts, restarts a part sent again, and reports each change once", () => {
    const reports: Array<[number, number]> = [];
    const progress = new Progress(30, (sent, total) => reports.push([sent, total]));
    progress.set(1, 5);
    progress.set(2, 10);
    progress.set(2, 10);
    progress.set(1, 0); // part 1 failed and starts again
    progress.set(1, 10);
    progress.set(3, 10);
    assert.equal(progress.sent, 30);
    assert.deepEqual(reports, [
      [5, 30],
      [15, 30],
      [10, 30],
      [20, 30],
      [30, 30],
    ]);
  });
});

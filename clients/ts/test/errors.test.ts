import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { errorFromBody, finalStateError, storageError } from "../src/errors.js";
import type { UploadRecord } from "../src/index.js";

describe("errorFromBody", () => {
  it("reads the broker's error JSON", () => {
    const error = errorFromBody(403, {
      error: { code: "ERR_QUOTA_EXCEEDED", message: "quota", details: { count: 10 } },
    });
    assert.equal(error.name, "BrokerUploadError");
    assert.equal(error.status, 403);
    assert.equal(error.code, "ERR_QUOTA_EXCEEDED");
    assert.equal(error.message, "quota");
    assert.deepEqual(error.details, { count: 10 });
    assert.ok(error instanceof Error);
  });

  it("falls back to the status for anything else", () => {
    const fromText = errorFromBody(502, "<html>Bad Gateway</html>");
    assert.equal(fromText.code, "ERR_HTTP_502");
    assert.match(fromText.message, /502: <html>Bad Gateway/);
    assert.equal(errorFromBody(500, undefined).code, "ERR_HTTP_500");
    assert.equal(errorFromBody(500, null).code, "ERR_HTTP_500");
    assert.equal(errorFromBody(400, { detail: "FastAPI's own" }).code, "ERR_HTTP_400");
  });
});

describe("storageError", () => {
  it("reads S3's XML error", () => {
    const xml =
      '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code>' +
      "<Message>The request signature we calculated does not match.</Message></Error>";
    const error = storageError(403, xml);
    assert.equal(error.status, 403);
    assert.equal(error.code, "SignatureDoesNotMatch");
    assert.equal(error.message, "storage: The request signature we calculated does not match.");
  });

  it("falls back to the status", () => {
    const error = storageError(503, "");
    assert.equal(error.code, "ERR_HTTP_503");
    assert.equal(error.message, "storage: storage answered 503");
  });
});

describe("finalStateError", () => {
  it("names the state and the reason, and carries the record", () => {
    const record = { id: "u1", status: "rejected", reject_reason: "size_mismatch" } as UploadRecord;
    const error = finalStateError(record);
    assert.equal(error.status, 0);
    assert.equal(error.code, "ERR_UPLOAD_REJECTED");
    assert.equal(error.message, "upload u1 ended rejected (size_mismatch)");
    assert.equal(error.record, record);
    const expired = finalStateError({ ...record, status: "expired", reject_reason: null });
    assert.equal(expired.code, "ERR_UPLOAD_EXPIRED");
    assert.equal(expired.message, "upload u1 ended expired");
  });
});

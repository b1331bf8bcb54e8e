// verifyWebhook against signatures made by the reference library (standardwebhooks on npm), not
// by our own code: what the broker sends must pass, anything altered must not.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";

import { Webhook } from "standardwebhooks";

import {
  type VerifyWebhookOptions,
  type WebhookEvent,
  WebhookVerificationError,
  verifyWebhook,
} from "../src/index.js";

const newSecret = () => `whsec_${randomBytes(32).toString("base64")}`;
const SECRET = newSecret();
const ID = "msg_2mVh8yOZ0dEeVFCp3PWb7Vw4Ygn";

const EVENT: WebhookEvent = {
  type: "upload.finalized",
  timestamp: "2026-11-26T16:02:11.120Z",
  data: {
    id: "6f1c9a52-8d4e-4a4b-9a3e-0c3d2b1a0f9e",
    owner: "alice",
    policy: "default",
    status: "finalized",
    size: 11,
    content_type: "text/plain",
    sha256: "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
    metadata: { album: "été" }, // not ASCII: the signature covers the UTF-8 bytes
    seq: 1042,
  },
};
const BODY = JSON.stringify(EVENT);

function signed(body: string, secrets: string[] = [SECRET], at = new Date(), id = ID) {
  const signature = secrets.map((secret) => new Webhook(secret).sign(id, at, body)).join(" ");
  return {
    "webhook-id": id,
    "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
    "webhook-signature": signature,
  };
}

/** The code of the error verifyWebhook throws (it must throw one). */
async function refused(
  body: string,
  headers: Record<string, string> | Headers,
  secret = SECRET,
  options?: VerifyWebhookOptions,
): Promise<string> {
  const error = await verifyWebhook(body, headers, secret, options).then(
    () => assert.fail("verifyWebhook accepted it"),
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof WebhookVerificationError, String(error));
  assert.equal(error.name, "WebhookVerificationError");
  return error.code;
}

describe("verifyWebhook", () => {
  it("returns the payload signed by the reference library", async () => {
    const event = await verifyWebhook(BODY, new Headers(signed(BODY)), SECRET);
    assert.deepEqual(event, EVENT);
    assert.equal(event.data.metadata.album, "été");
  });

  it("takes the body as bytes and Node's header object, whatever the header case", async () => {
    const headers = Object.fromEntries(
      Object.entries(signed(BODY)).map(([name, value]) => [name.toUpperCase(), value]),
    );
    const bytes = new TextEncoder().encode(BODY);
    assert.deepEqual(await verifyWebhook(bytes, headers, SECRET), EVENT);
    assert.deepEqual(await verifyWebhook(bytes.buffer, headers, SECRET), EVENT);
  });

  it("refuses a tampered body", async () => {
    const headers = signed(BODY);
    const tampered = BODY.replace('"owner":"alice"', '"owner":"mallory"');
    assert.notEqual(tampered, BODY);
    assert.equal(await refused(tampered, headers), "ERR_WEBHOOK_BAD_SIGNATURE");
    // Same JSON value, other bytes: the signature is over the raw body, not the parsed one.
    const reformatted = JSON.stringify(EVENT, null, 2);
    assert.equal(
      await refused(reformatted, headers),
      "ERR_WEBHOOK_BAD_SIGNATURE",
    );
  });

  it("refuses another secret, another id and another timestamp", async () => {
    const headers = signed(BODY);
    const bad = "ERR_WEBHOOK_BAD_SIGNATURE";
    assert.equal(await refused(BODY, headers, newSecret()), bad);
    assert.equal(await refused(BODY, { ...headers, "webhook-id": "msg_other" }), bad);
    const later = String(Number(headers["webhook-timestamp"]) + 1);
    assert.equal(await refused(BODY, { ...headers, "webhook-timestamp": later }), bad);
  });

  it("refuses a timestamp more than 5 minutes off, unless told a wider tolerance", async () => {
    const now = new Date();
    const sixMinutes = 6 * 60 * 1000;
    const old = signed(BODY, [SECRET], new Date(now.getTime() - sixMinutes));
    assert.equal(await refused(BODY, old, SECRET, { now }), "ERR_WEBHOOK_TIMESTAMP_TOO_OLD");
    const ahead = signed(BODY, [SECRET], new Date(now.getTime() + sixMinutes));
    assert.equal(await refused(BODY, ahead, SECRET, { now }), "ERR_WEBHOOK_TIMESTAMP_TOO_NEW");

    const fourMinutes = signed(BODY, [SECRET], new Date(now.getTime() - 4 * 60 * 1000));
    assert.deepEqual(await verifyWebhook(BODY, fourMinutes, SECRET, { now }), EVENT);
    const options = { now, toleranceSeconds: 10 * 60 };
    assert.deepEqual(await verifyWebhook(BODY, old, SECRET, options), EVENT);
    assert.equal(
      await refused(BODY, old, SECRET, { now, toleranceSeconds: 60 }),
      "ERR_WEBHOOK_TIMESTAMP_TOO_OLD",
    );
  });

  it("refuses a request missing any of the three headers", async () => {
    for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"] as const) {
      const headers: Record<string, string> = signed(BODY);
      delete headers[name];
      assert.equal(await refused(BODY, headers), "ERR_WEBHOOK_MISSING_HEADER");
      assert.equal(
        await refused(BODY, new Headers(headers)),
        "ERR_WEBHOOK_MISSING_HEADER",
      );
    }
    const empty = { ...signed(BODY), "webhook-signature": "" };
    assert.equal(await refused(BODY, empty), "ERR_WEBHOOK_MISSING_HEADER");
  });

  it("accepts either secret while one is rotated (two signatures), and no third", async () => {
    const previous = newSecret();
    const headers = signed(BODY, [previous, SECRET]);
    assert.equal(headers["webhook-signature"].split(" ").length, 2);
    assert.deepEqual(await verifyWebhook(BODY, headers, previous), EVENT);
    assert.deepEqual(await verifyWebhook(BODY, headers, SECRET), EVENT);
    assert.equal(await refused(BODY, headers, newSecret()), "ERR_WEBHOOK_BAD_SIGNATURE");
  });

  it("ignores signatures of other versions and garbage entries", async () => {
    const good = signed(BODY)["webhook-signature"];
    const base64 = good.slice(3);
    const headers = { ...signed(BODY), "webhook-signature": `v1a,${base64} v2,${base64}` };
    assert.equal(await refused(BODY, headers), "ERR_WEBHOOK_BAD_SIGNATURE");
    headers["webhook-signature"] = `v1,not*base64 v1, v1,${base64.slice(4)} ${good}`;
    assert.deepEqual(await verifyWebhook(BODY, headers, SECRET), EVENT);
  });

  it("refuses a bad timestamp, a bad secret and a signed body that is no event", async () => {
    const headers = { ...signed(BODY), "webhook-timestamp": "1e9" };
    assert.equal(await refused(BODY, headers), "ERR_WEBHOOK_BAD_TIMESTAMP");
    for (const secret of ["", "whsec_", "whsec_not base64!"]) {
      assert.equal(await refused(BODY, signed(BODY), secret), "ERR_WEBHOOK_BAD_SECRET");
    }
    // The reference library accepts a secret without the prefix; so does verifyWebhook.
    assert.deepEqual(await verifyWebhook(BODY, signed(BODY), SECRET.slice(6)), EVENT);
    for (const body of ["not json", "[1, 2]", '{"type": "upload.finalized"}']) {
      assert.equal(await refused(body, signed(body)), "ERR_WEBHOOK_BAD_PAYLOAD");
    }
  });
});

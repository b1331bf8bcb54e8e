// POST /api/broker-webhook: the broker tells this app's server that an upload changed
// (Standard Webhooks: signed, retried until it gets a 2xx, the same webhook-id every time).
// It records a finalized file on its owner's record even when the browser tab was closed.
import { WebhookVerificationError, verifyWebhook } from "@broker/client";
import { NextResponse } from "next/server";

import { applyEvent } from "@/lib/webhook-store";

export const dynamic = "force-dynamic";

function error(status: number, code: string, message: string) {
  return NextResponse.json({ error: { code, message } }, { status });
}

export async function POST(request: Request) {
  const secret = process.env.BROKER_WEBHOOK_SECRET;
  if (!secret) {
    // 5xx: the broker keeps the event and retries, so nothing is lost while this is fixed.
    return error(500, "ERR_NOT_CONFIGURED", "BROKER_WEBHOOK_SECRET is not set (see .env.example).");
  }
  // The raw body: the signature covers these exact bytes, not JSON parsed and serialized again.
  const body = await request.text();
  let event;
  try {
    event = await verifyWebhook(body, request.headers, secret);
  } catch (caught) {
    if (!(caught instanceof WebhookVerificationError)) throw caught;
    const status = caught.code === "ERR_WEBHOOK_BAD_SECRET" ? 500 : 400;
    return error(status, caught.code, caught.message);
  }
  // verifyWebhook has checked the header is there. Record and answer at once: the broker
  // waits for this answer (15 s at most), so slow work belongs in a queue of the app's own.
  const outcome = await applyEvent(request.headers.get("webhook-id")!, event);
  return NextResponse.json({ outcome, type: event.type, id: event.data.id });
}

// POST /api/broker-token: a 10-minute broker token for the signed-in user.
// The browser calls this, then talks to the broker (and MinIO) directly with the token.
import { NextResponse } from "next/server";

import { BROKER_TOKEN_TTL_SECONDS, mintBrokerToken } from "@/lib/broker-jwt";
import { currentUser } from "@/lib/session";

export const dynamic = "force-dynamic";

const NO_STORE = { "cache-control": "no-store" };

function error(status: number, code: string, message: string) {
  return NextResponse.json({ error: { code, message } }, { status, headers: NO_STORE });
}

export async function POST() {
  const user = await currentUser();
  if (user === null) {
    return error(401, "ERR_UNAUTHORIZED", "Sign in first.");
  }
  const secret = process.env.BROKER_JWT_SECRET;
  if (!secret || secret.length < 32) {
    // The broker refuses secrets under 32 characters, so a shorter one is a setup mistake.
    return error(
      500,
      "ERR_NOT_CONFIGURED",
      "BROKER_JWT_SECRET is not set on the Next.js server (see .env.example).",
    );
  }
  const { token, expiresAt } = mintBrokerToken(secret, user, BROKER_TOKEN_TTL_SECONDS);
  return NextResponse.json({ token, expires_at: expiresAt, sub: user }, { headers: NO_STORE });
}

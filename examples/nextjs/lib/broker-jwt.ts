// Server only: mints the broker's bearer tokens. Imported by app/api/broker-token/route.ts
// and nothing that runs in the browser, so BROKER_JWT_SECRET never leaves the server.
import { createHmac } from "node:crypto";

/** Tokens live 10 minutes; the browser asks for a new one when its copy runs out. */
export const BROKER_TOKEN_TTL_SECONDS = 600;

function base64url(text: string): string {
  return Buffer.from(text).toString("base64url");
}

/**
 * An HS256 JWT the broker accepts (broker/auth.py): `sub` is the owner of the uploads,
 * `iat` and `exp` in seconds. Plain HMAC-SHA256, so no JWT library is needed.
 */
export function mintBrokerToken(
  secret: string,
  subject: string,
  ttlSeconds: number = BROKER_TOKEN_TTL_SECONDS,
  now: number = Math.floor(Date.now() / 1000),
): { token: string; expiresAt: number } {
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = base64url(JSON.stringify({ sub: subject, iat: now, exp: now + ttlSeconds }));
  const signature = createHmac("sha256", secret)
    .update(`${header}.${payload}`)
    .digest("base64url");
  return { token: `${header}.${payload}.${signature}`, expiresAt: now + ttlSeconds };
}

// Browser side: fetch (and reuse) a broker token from our route handler.

export class NotSignedInError extends Error {
  constructor() {
    super("You are not signed in.");
    this.name = "NotSignedInError";
  }
}

type Cached = { user: string; token: string; expiresAt: number };
let cached: Cached | null = null;

/**
 * A broker token for `user`, reused until a minute before it expires. Keyed by user, so a
 * sign-out and sign-in as someone else (a client-side navigation) never reuses the old one.
 */
export async function getBrokerToken(user: string): Promise<string> {
  const now = Date.now() / 1000;
  if (cached !== null && cached.user === user && cached.expiresAt - now > 60) {
    return cached.token;
  }
  const response = await fetch("/api/broker-token", { method: "POST", cache: "no-store" });
  if (response.status === 401) {
    throw new NotSignedInError();
  }
  const body = (await response.json().catch(() => null)) as {
    token?: string;
    expires_at?: number;
    sub?: string;
    error?: { message?: string };
  } | null;
  if (!response.ok || !body?.token || body.expires_at === undefined) {
    throw new Error(body?.error?.message ?? `Could not get a broker token (HTTP ${response.status}).`);
  }
  if (body.sub !== user) {
    // Signed in as someone else in another tab: the page's user is stale.
    throw new NotSignedInError();
  }
  cached = { user, token: body.token, expiresAt: body.expires_at };
  return body.token;
}

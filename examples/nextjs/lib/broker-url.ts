// Server side: where the browser reaches the broker, read from the environment on every
// request (not inlined at build time like a NEXT_PUBLIC_ variable), so one `next build` serves
// any broker. The pages (server components) pass it to their client components as a prop;
// in the browser process.env.BROKER_URL does not exist.

export const DEFAULT_BROKER_URL = "http://127.0.0.1:8000";

/** BROKER_URL from the Next.js server's environment, without a trailing slash. */
export function brokerUrl(): string {
  return (process.env.BROKER_URL || DEFAULT_BROKER_URL).replace(/\/+$/, "");
}

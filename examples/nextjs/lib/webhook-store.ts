// What the webhook route learnt, per user: the files the broker finalized for them.
// The example keeps it in one JSON file (WEBHOOK_STORE_FILE, default .data/webhook-store.json);
// a real app writes the same three things to its database, in one transaction:
//   - the webhook-id, under a unique constraint: a retried delivery changes nothing twice;
//   - the last `seq` applied per upload: an event older than it is dropped;
//   - the file on the user's record (a post, a profile, ...).
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";

import type { WebhookEvent } from "@broker/client";

export interface RecordedFile {
  id: string;
  size: number | null;
  content_type: string;
  sha256: string | null;
  metadata: Record<string, string>;
  recorded_at: string;
}

interface Store {
  /** Every webhook-id handled, with when: the idempotency keys. */
  deliveries: Record<string, string>;
  /** Upload id -> the seq of the last event applied for it. */
  seqs: Record<string, number>;
  /** User (the upload's owner, the broker token's `sub`) -> their recorded files. */
  users: Record<string, { files: RecordedFile[] }>;
}

/** What the route did with an event: answered 2xx in every case, so the broker stops sending. */
export type Outcome = "applied" | "duplicate" | "stale" | "ignored";

function storeFile(): string {
  const file = process.env.WEBHOOK_STORE_FILE || path.join(".data", "webhook-store.json");
  // A path known only at run time: tell the bundler not to trace (copy) what it might reach.
  return path.resolve(/*turbopackIgnore: true*/ file);
}

async function load(file: string): Promise<Store> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as Store;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    return { deliveries: {}, seqs: {}, users: {} };
  }
}

async function save(file: string, store: Store): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.tmp`;
  await writeFile(temporary, JSON.stringify(store, null, 1));
  await rename(temporary, file); // atomic: a reader sees the old file or the new one
}

// One change at a time (a read-modify-write of the file), in this one Node process.
let queue: Promise<unknown> = Promise.resolve();

/** Apply a verified event once per webhook-id, and only if it is newer than the last one
 * applied for its upload. */
export function applyEvent(webhookId: string, event: WebhookEvent): Promise<Outcome> {
  const next = queue.then(async (): Promise<Outcome> => {
    const file = storeFile();
    const store = await load(file);
    if (webhookId in store.deliveries) return "duplicate";
    store.deliveries[webhookId] = new Date().toISOString();
    const outcome = applyToStore(store, event);
    await save(file, store);
    return outcome;
  });
  queue = next.catch(() => undefined);
  return next;
}

function applyToStore(store: Store, event: WebhookEvent): Outcome {
  if (!event.type.startsWith("upload.")) return "ignored"; // webhook.test, newer types
  const upload = event.data;
  const last = store.seqs[upload.id];
  if (last !== undefined && upload.seq <= last) return "stale";
  store.seqs[upload.id] = upload.seq;
  const user = (store.users[upload.owner] ??= { files: [] });
  const others = user.files.filter((file) => file.id !== upload.id);
  if (event.type === "upload.finalized") {
    const { id, size, content_type, sha256, metadata } = upload;
    const recorded_at = new Date().toISOString();
    user.files = [{ id, size, content_type, sha256, metadata, recorded_at }, ...others];
  } else {
    user.files = others; // deleted (or never finalized): no longer the user's file
  }
  return "applied";
}

/** The files the webhook recorded for `user`, newest first. */
export async function recordedFiles(user: string): Promise<RecordedFile[]> {
  await queue;
  return (await load(storeFile())).users[user]?.files ?? [];
}

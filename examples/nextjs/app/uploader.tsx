"use client";
// The upload form: the broker's TypeScript client creates the upload, sends the bytes straight
// to MinIO (progress from XMLHttpRequest) and waits on the live status stream until the broker
// has finalized or rejected the object.
import { BrokerUploadError, uploadFile, type UploadRecord, type UploadStatus } from "@broker/client";
import Link from "next/link";
import { useRef, useState, type FormEvent } from "react";

import { brokerClient } from "@/lib/broker-api";
import { NotSignedInError } from "@/lib/broker-token";
import { formatBytes } from "@/lib/format";

type State =
  | { phase: "idle" }
  | { phase: "uploading"; sent: number; total: number; status: UploadStatus | null }
  | { phase: "settled"; record: UploadRecord } // finalized, or rejected/expired/deleted
  | { phase: "cancelled" }
  | { phase: "failed"; message: string };

export default function Uploader({ user, brokerUrl }: { user: string; brokerUrl: string }) {
  const [file, setFile] = useState<File | null>(null);
  const [state, setState] = useState<State>({ phase: "idle" });
  const controller = useRef<AbortController | null>(null);
  const input = useRef<HTMLInputElement>(null);
  const busy = state.phase === "uploading";

  // Once the broker has settled an upload, its file is not offered again: a second click
  // would upload a duplicate. Choosing a file (the same one, too) enables Upload.
  function forgetFile() {
    setFile(null);
    if (input.current) input.current.value = "";
  }

  async function onSubmit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    if (file === null || busy) return;
    const abort = new AbortController();
    controller.current = abort;
    let progress = { sent: 0, total: file.size, status: null as UploadStatus | null };
    const show = (change: Partial<typeof progress>) => {
      progress = { ...progress, ...change };
      if (!abort.signal.aborted) setState({ phase: "uploading", ...progress });
    };
    show({});
    try {
      const client = await brokerClient(brokerUrl, user); // fetches a token from /api/broker-token
      const record = await uploadFile(client, file, {
        signal: abort.signal,
        onProgress: (sent, total) => show({ sent, total }),
        onStatus: (status) => show({ status }),
      });
      setState({ phase: "settled", record });
      forgetFile();
    } catch (error) {
      if (abort.signal.aborted) {
        setState({ phase: "cancelled" });
      } else if (error instanceof BrokerUploadError && error.record !== undefined) {
        // The bytes arrived, but the broker refused them (size, type or checksum mismatch).
        setState({ phase: "settled", record: error.record });
        forgetFile();
      } else if (error instanceof NotSignedInError) {
        window.location.assign("/login");
      } else {
        setState({ phase: "failed", message: describe(error, brokerUrl) });
      }
    } finally {
      controller.current = null;
    }
  }

  return (
    <section className="card">
      <h1>Upload a file</h1>
      <p className="note">
        The bytes go from this browser straight to MinIO; the broker at <code>{brokerUrl}</code>{" "}
        records the upload as <code>{user}</code>.
      </p>
      <form onSubmit={onSubmit} className="row">
        <input
          ref={input}
          type="file"
          disabled={busy}
          onChange={(event) => {
            setFile(event.target.files?.[0] ?? null);
            setState({ phase: "idle" });
          }}
        />
        <button type="submit" disabled={file === null || busy}>
          Upload
        </button>
        <button type="button" disabled={!busy} onClick={() => controller.current?.abort()}>
          Cancel
        </button>
      </form>
      <Progress state={state} />
    </section>
  );
}

function Progress({ state }: { state: State }) {
  switch (state.phase) {
    case "idle":
      return null;
    case "uploading": {
      const { sent, total, status } = state;
      const percent = total > 0 ? Math.floor((100 * sent) / total) : 0;
      return (
        <div>
          <progress value={sent} max={total || 1} />
          <p>
            {sent >= total
              ? "Sent; waiting for the broker to check the object…"
              : `${percent}% · ${formatBytes(sent)} of ${formatBytes(total)}`}
            {status !== null && (
              <>
                {" "}
                · broker: <span className={`status status-${status}`}>{status}</span>
              </>
            )}
          </p>
        </div>
      );
    }
    case "settled": {
      const { record } = state;
      return (
        <div>
          <progress value={record.status === "finalized" ? 1 : 0} max={1} />
          <p>
            <span className={`status status-${record.status}`}>{record.status}</span>{" "}
            {record.filename} ({formatBytes(record.size)}) · id <code>{record.id}</code>
            {record.reject_reason ? (
              <>
                {" "}
                · reason <code>{record.reject_reason}</code>
              </>
            ) : null}
          </p>
          {record.status === "finalized" && (
            <p>
              <Link href="/files">See it in My files</Link>
            </p>
          )}
        </div>
      );
    }
    case "cancelled":
      return (
        <p className="note">
          Cancelled. An upload cut short while its bytes were on the way has been deleted (My
          files shows it <code>deleted</code>); one whose bytes had all arrived is kept and may
          still be finalized.
        </p>
      );
    case "failed":
      return <p className="error">{state.message}</p>;
  }
}

function describe(error: unknown, brokerUrl: string): string {
  if (error instanceof BrokerUploadError) {
    return `${error.message} (${error.code})`;
  }
  if (error instanceof TypeError) {
    // fetch's own error: usually CORS (BROKER_CORS_ORIGINS) or the broker is not running.
    return `Could not reach the broker at ${brokerUrl} (${error.message}). Is it running, with BROKER_CORS_ORIGINS including ${window.location.origin}?`;
  }
  return error instanceof Error ? error.message : String(error);
}

"use client";
// The user's uploads, newest first, from the broker (GET /v1/uploads), a page at a time.
import type { UploadRecord } from "@broker/client";
import { useRouter } from "next/navigation";
import { useCallback, useEffect, useState } from "react";

import { downloadUrl, listUploads } from "@/lib/broker-api";
import { NotSignedInError } from "@/lib/broker-token";
import { formatBytes, formatTime } from "@/lib/format";

const PAGE_SIZE = 20;

export default function FileList({ user, brokerUrl }: { user: string; brokerUrl: string }) {
  const [items, setItems] = useState<UploadRecord[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [done, setDone] = useState(false);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const router = useRouter();

  const load = useCallback(
    async (after: string | null, replace: boolean) => {
      setLoading(true);
      setError(null);
      try {
        const page = await listUploads(brokerUrl, user, after, PAGE_SIZE);
        setItems((previous) => (replace ? page.items : [...previous, ...page.items]));
        setCursor(page.next_cursor);
        setDone(page.next_cursor === null);
      } catch (caught) {
        handle(caught, setError);
      } finally {
        setLoading(false);
      }
    },
    [brokerUrl, user],
  );

  useEffect(() => {
    void load(null, true);
  }, [load]);

  return (
    <section className="card">
      <div className="row">
        <h1>My files</h1>
        <span className="spacer" />
        <button
          type="button"
          disabled={loading}
          onClick={() => {
            void load(null, true);
            router.refresh(); // the server part too: what the webhook recorded since
          }}
        >
          Refresh
        </button>
      </div>
      {error !== null && <p className="error">{error}</p>}
      {items.length === 0 && !loading && error === null ? (
        <p className="note">No uploads yet.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>File</th>
              <th>Size</th>
              <th>Status</th>
              <th>Created</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {items.map((item) => (
              <Row key={item.id} item={item} user={user} brokerUrl={brokerUrl} onError={setError} />
            ))}
          </tbody>
        </table>
      )}
      <p>
        {!done && (
          <button type="button" disabled={loading} onClick={() => void load(cursor, false)}>
            {loading ? "Loading…" : "Load more"}
          </button>
        )}
      </p>
    </section>
  );
}

function Row({
  item,
  user,
  brokerUrl,
  onError,
}: {
  item: UploadRecord;
  user: string;
  brokerUrl: string;
  onError: (message: string | null) => void;
}) {
  const [opening, setOpening] = useState(false);

  async function download() {
    setOpening(true);
    onError(null);
    // Open the tab during the click (popup blockers allow that), point it at the link after.
    const tab = window.open("", "_blank");
    try {
      const url = await downloadUrl(brokerUrl, user, item.id);
      if (tab !== null) {
        tab.opener = null;
        tab.location.href = url;
      } else {
        window.location.assign(url);
      }
    } catch (caught) {
      tab?.close();
      handle(caught, onError);
    } finally {
      setOpening(false);
    }
  }

  return (
    <tr>
      <td>
        {item.filename}
        <br />
        <small className="note">
          {item.content_type} · <code>{item.id}</code>
        </small>
      </td>
      <td className="num">{formatBytes(item.size)}</td>
      <td>
        <span className={`status status-${item.status}`}>{item.status}</span>
        {item.reject_reason !== null && (
          <>
            <br />
            <small className="note">{item.reject_reason}</small>
          </>
        )}
      </td>
      <td>{formatTime(item.created_at)}</td>
      <td>
        {item.status === "finalized" && (
          <button type="button" className="link" disabled={opening} onClick={() => void download()}>
            {opening ? "Opening…" : "Download"}
          </button>
        )}
      </td>
    </tr>
  );
}

function handle(caught: unknown, report: (message: string) => void) {
  if (caught instanceof NotSignedInError) {
    window.location.assign("/login");
    return;
  }
  report(caught instanceof Error ? caught.message : String(caught));
}

// The files this app's server recorded on the user's record from the broker's webhooks: what
// a real app would attach to a post or a profile, known even if the uploading tab was closed.
import { recordedFiles } from "@/lib/webhook-store";
import { formatBytes, formatTime } from "@/lib/format";

export default async function RecordedFiles({ user }: { user: string }) {
  const files = await recordedFiles(user);
  return (
    <section className="card" id="recorded">
      <h2>Recorded by the webhook</h2>
      <p className="note">
        Finalized uploads the broker reported to <code>/api/broker-webhook</code>, stored on{" "}
        <code>{user}</code>&apos;s record by this app&apos;s server.
      </p>
      {files.length === 0 ? (
        <p className="note">None yet.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Upload id</th>
              <th>Size</th>
              <th>Type</th>
              <th>Recorded</th>
            </tr>
          </thead>
          <tbody>
            {files.map((file) => (
              <tr key={file.id} className="recorded-file">
                <td>
                  <code>{file.id}</code>
                </td>
                <td className="num">{formatBytes(file.size)}</td>
                <td>{file.content_type}</td>
                <td>{formatTime(file.recorded_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

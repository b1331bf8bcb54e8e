import { redirect } from "next/navigation";

import { signIn } from "@/app/actions";
import { currentUser } from "@/lib/session";

export default async function LoginPage({
  searchParams,
}: {
  searchParams: Promise<{ error?: string }>;
}) {
  if ((await currentUser()) !== null) {
    redirect("/");
  }
  const { error } = await searchParams;
  return (
    <section className="card">
      <h1>Sign in</h1>
      <p className="note">
        A <b>fake</b> session for this example: type any name and you are that user (a{" "}
        <code>user</code> cookie, no password, no check). The broker sees the name as the{" "}
        <code>sub</code> of the tokens this app mints, so each name has its own files.
      </p>
      <form action={signIn} className="row">
        <input
          name="name"
          required
          maxLength={64}
          pattern="[A-Za-z0-9_.@\-]{1,64}"
          placeholder="alice"
          autoFocus
        />
        <button type="submit">Sign in</button>
      </form>
      {error === "invalid" && (
        <p className="error">Use 1-64 letters, digits, &quot;.&quot;, &quot;_&quot;, &quot;-&quot; or &quot;@&quot;.</p>
      )}
    </section>
  );
}

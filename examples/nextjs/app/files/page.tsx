import { redirect } from "next/navigation";

import { brokerUrl } from "@/lib/broker-url";
import { currentUser } from "@/lib/session";

import FileList from "./file-list";
import RecordedFiles from "./recorded-files";

// The user's uploads: the server checks the (fake) session, the browser lists them from the
// broker with its own token; below, what the app's own webhook route recorded for the user.
export default async function FilesPage() {
  const user = await currentUser();
  if (user === null) {
    redirect("/login");
  }
  return (
    <>
      <FileList user={user} brokerUrl={brokerUrl()} />
      <RecordedFiles user={user} />
    </>
  );
}

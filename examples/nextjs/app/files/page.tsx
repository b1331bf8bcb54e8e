import { redirect } from "next/navigation";

import { currentUser } from "@/lib/session";

import FileList from "./file-list";

// The user's uploads: the server checks the (fake) session, the browser lists them from the
// broker with its own token.
export default async function FilesPage() {
  const user = await currentUser();
  if (user === null) {
    redirect("/login");
  }
  return <FileList user={user} />;
}

import { redirect } from "next/navigation";

import { brokerUrl } from "@/lib/broker-url";
import { currentUser } from "@/lib/session";

import Uploader from "./uploader";

// The upload page: the server checks the (fake) session and reads the broker's address
// (BROKER_URL, per request); the client component does the rest.
export default async function UploadPage() {
  const user = await currentUser();
  if (user === null) {
    redirect("/login");
  }
  return <Uploader user={user} brokerUrl={brokerUrl()} />;
}

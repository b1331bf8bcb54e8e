import type { Metadata } from "next";
import Link from "next/link";
import type { ReactNode } from "react";

import { signOut } from "@/app/actions";
import { currentUser } from "@/lib/session";

import "./globals.css";

export const metadata: Metadata = {
  title: "broker + Next.js",
  description: "Direct-to-MinIO uploads through the broker, from a Next.js app",
};

export default async function RootLayout({ children }: { children: ReactNode }) {
  const user = await currentUser();
  return (
    <html lang="en">
      <body>
        <header className="top">
          <strong>broker example</strong>
          {user !== null && (
            <nav>
              <Link href="/">Upload</Link>
              <Link href="/files">My files</Link>
            </nav>
          )}
          <span className="spacer" />
          {user !== null ? (
            <form action={signOut} className="who">
              <span>
                signed in as <b>{user}</b>
              </span>
              <button type="submit" className="link">
                Sign out
              </button>
            </form>
          ) : (
            <Link href="/login">Sign in</Link>
          )}
        </header>
        <main>{children}</main>
      </body>
    </html>
  );
}

"use server";
// Sign in / sign out for the fake session: set or clear the `user` cookie. No password, no
// check of who you are — this stands in for a real login.
import { cookies } from "next/headers";
import { redirect } from "next/navigation";

import { USER_COOKIE, isValidUserName } from "@/lib/session";

export async function signIn(formData: FormData): Promise<void> {
  const name = String(formData.get("name") ?? "").trim();
  if (!isValidUserName(name)) {
    redirect("/login?error=invalid");
  }
  (await cookies()).set(USER_COOKIE, name, {
    httpOnly: true, // the browser's scripts never read it; they ask /api/broker-token
    sameSite: "lax",
    path: "/",
    maxAge: 8 * 60 * 60,
    // A real app also sets `secure: true` (it is served over HTTPS).
  });
  redirect("/");
}

export async function signOut(): Promise<void> {
  (await cookies()).delete(USER_COOKIE);
  redirect("/login");
}

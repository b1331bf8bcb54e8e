// The fake session: the signed-in user is whatever name the `user` cookie holds.
// There is NO authentication here — anyone can set this cookie to any name. A real app
// reads its own session (Auth.js, Clerk, its own login, ...) in the same two places.
import { cookies } from "next/headers";

export const USER_COOKIE = "user";

// The broker accepts any `sub` of 1-255 characters; this demo keeps names simple.
const USER_NAME = /^[A-Za-z0-9_.@-]{1,64}$/;

export function isValidUserName(name: string): boolean {
  return USER_NAME.test(name);
}

/** The signed-in user's name, or null (server only: reads the request's cookies). */
export async function currentUser(): Promise<string | null> {
  const value = (await cookies()).get(USER_COOKIE)?.value;
  return value !== undefined && isValidUserName(value) ? value : null;
}

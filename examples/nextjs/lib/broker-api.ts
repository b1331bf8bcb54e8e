// Browser side: a broker client for the signed-in user, and the read calls the files page makes.
import {
  BrokerUploadError,
  createBrokerClient,
  type BrokerClient,
  type components,
} from "@broker/client";

import { getBrokerToken } from "@/lib/broker-token";

export type UploadPage = components["schemas"]["UploadPage"];

/**
 * A typed broker client for `user`, calling the broker at `brokerUrl` (the server's BROKER_URL,
 * which the page passed down). Tokens live 10 minutes, so instead of fixing one token
 * for the client's lifetime, every request gets a current one from /api/broker-token (cached
 * until a minute before it expires): a long multipart upload keeps signing its parts.
 */
export async function brokerClient(brokerUrl: string, user: string): Promise<BrokerClient> {
  const token = await getBrokerToken(user);
  return createBrokerClient({
    baseUrl: brokerUrl,
    token,
    fetch: async (request) => {
      request.headers.set("authorization", `Bearer ${await getBrokerToken(user)}`);
      return fetch(request);
    },
  });
}

/** The body of a 2xx answer, or the broker's `{"error": {code, message}}` as an exception. */
function unwrap<T>(answer: { data?: T; error?: unknown; response: Response }): T {
  if (answer.response.ok && answer.data !== undefined) return answer.data;
  const error = (answer.error as { error?: { code?: string; message?: string } } | undefined)?.error;
  const status = answer.response.status;
  throw new BrokerUploadError(
    status,
    error?.code ?? `ERR_HTTP_${status}`,
    error?.message ?? `The broker answered HTTP ${status}.`,
  );
}

/** GET /v1/uploads: one page of the user's uploads, newest first. */
export async function listUploads(
  brokerUrl: string,
  user: string,
  cursor: string | null,
  limit = 20,
): Promise<UploadPage> {
  const client = await brokerClient(brokerUrl, user);
  const query = cursor === null ? { limit } : { limit, cursor };
  return unwrap(await client.GET("/v1/uploads", { params: { query } }));
}

/** GET /v1/uploads/{id}/download: a short-lived presigned GET for a finalized upload. */
export async function downloadUrl(brokerUrl: string, user: string, id: string): Promise<string> {
  const client = await brokerClient(brokerUrl, user);
  const link = unwrap(
    await client.GET("/v1/uploads/{upload_id}/download", { params: { path: { upload_id: id } } }),
  );
  return link.url;
}

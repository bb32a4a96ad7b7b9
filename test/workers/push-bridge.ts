/**
 * A push bridge for the workers tests, run by vitest in Node as the test runtime's
 * outbound service (vitest.config.ts): every `fetch` the Worker and its objects make
 * comes here. POSTs to `http://push-bridge.test/hook` are recorded per recipient
 * (`userId` of the body); the tests read them back with `GET /received?userId=` and
 * script answers with `POST /script {userId, statuses}` (each hook takes the next
 * status, then 200). Any other host is fetched as usual.
 */
export const PUSH_BRIDGE_HOST = "push-bridge.test";

type Received = { body: string; signature: string | null; timestamp: string | null; contentType: string | null; status: number };

const received = new Map<string, Received[]>();
const scripts = new Map<string, number[]>();

export async function pushBridge(request: Request): Promise<Response> {
  const url = new URL(request.url);
  if (url.hostname !== PUSH_BRIDGE_HOST) return fetch(request);
  if (request.method === "POST" && url.pathname === "/hook") {
    const body = await request.text();
    const userId = String((JSON.parse(body) as { userId?: unknown }).userId);
    const status = scripts.get(userId)?.shift() ?? 200;
    const list = received.get(userId) ?? [];
    list.push({
      body,
      signature: request.headers.get("x-edgechat-signature"),
      timestamp: request.headers.get("x-edgechat-timestamp"),
      contentType: request.headers.get("content-type"),
      status,
    });
    received.set(userId, list);
    return new Response(status < 300 ? "ok" : "no", { status });
  }
  if (request.method === "GET" && url.pathname === "/received") {
    return Response.json(received.get(url.searchParams.get("userId") ?? "") ?? []);
  }
  if (request.method === "POST" && url.pathname === "/script") {
    const { userId, statuses } = (await request.json()) as { userId: string; statuses: number[] };
    scripts.set(userId, [...statuses]);
    return new Response(null, { status: 204 });
  }
  return new Response("not found", { status: 404 });
}

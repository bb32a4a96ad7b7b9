import { readdirSync, readFileSync } from "node:fs";
import { parse as parseToml } from "smol-toml";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import * as protocol from "../../src/protocol/index.ts";

/**
 * Keeps docs/protocol.md exact: every labelled JSON example parses with the schema it
 * names, every protocol schema has an example, and every error code, close code,
 * route, limit and setting of the source is documented as the source defines it.
 */

const readRepoFile = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), "utf8");
const doc = readRepoFile("docs/protocol.md");

// ---- labelled examples ----

type Example = { schema: string; json: string; line: number };

/** Every fenced block opened with ```json schema=Name. */
function labelledExamples(markdown: string): Example[] {
  const fence = /^```json[ \t]+schema=(\S+)[ \t]*\n([\s\S]*?)^```[ \t]*$/gm;
  return [...markdown.matchAll(fence)].map((match) => ({
    schema: match[1]!,
    json: match[2]!,
    line: markdown.slice(0, match.index).split("\n").length,
  }));
}

const examples = labelledExamples(doc);
const exported = protocol as Record<string, unknown>;
const schemaNames = Object.keys(exported)
  .filter((name) => exported[name] instanceof z.ZodType)
  .sort();

describe("docs/protocol.md examples", () => {
  it("are found, and every fence that mentions a schema uses the exact ```json schema=Name form", () => {
    expect(examples.length).toBeGreaterThan(schemaNames.length);
    const schemaFences = doc.split("\n").filter((line) => /^```.*schema/.test(line));
    expect(schemaFences).toHaveLength(examples.length);
  });

  it.each(examples)("line $line parses with $schema", ({ schema: name, json, line }) => {
    const schema = exported[name];
    if (!(schema instanceof z.ZodType)) {
      throw new Error(`line ${line}: no zod schema named ${name} is exported from src/protocol/index.ts`);
    }
    let value: unknown;
    try {
      value = JSON.parse(json);
    } catch (error) {
      throw new Error(`line ${line}: the ${name} example is not valid JSON (${String(error)}):\n${json}`);
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      throw new Error(
        `line ${line}: the ${name} example does not parse with ${name}:\n${json}\nzod issues:\n${JSON.stringify(parsed.error.issues, null, 2)}`,
      );
    }
  });

  it("are all listed in the schema index", () => {
    const index = section("Schema index");
    expect(schemaNames.filter((name) => !index.includes(`\`${name}\``))).toEqual([]);
  });

  it("cover every zod schema exported from src/protocol/index.ts", () => {
    expect(schemaNames.length).toBeGreaterThan(0);
    const documented = new Set(examples.map((e) => e.schema));
    const missing = schemaNames.filter((name) => !documented.has(name));
    expect(missing, `schemas without a \`\`\`json schema=Name example: ${missing.join(", ")}`).toEqual([]);
  });
});

// ---- tables ----

/** The text of the `## N. Title` section, up to the next `## ` heading. */
function section(title: string): string {
  const heading = new RegExp(`^## \\d+\\. ${title}$`, "m").exec(doc);
  if (!heading) throw new Error(`docs/protocol.md has no "## N. ${title}" section`);
  const rest = doc.slice(heading.index + heading[0].length);
  const next = /^## /m.exec(rest);
  return next ? rest.slice(0, next.index) : rest;
}

/** The table row whose first cell is `name` (in backticks). */
function row(text: string, name: string): string {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const line = new RegExp(`^\\|\\s*\`${escaped}\`\\s*\\|.*$`, "m").exec(text)?.[0];
  if (!line) throw new Error(`no table row for \`${name}\``);
  return line;
}

const mentions = (text: string, value: number | string) => new RegExp(`(^|[^\\w])${value}([^\\w]|$)`).test(text);

/** Every `.ts` file under src/, with its text. */
function sourceFiles(): { path: string; text: string }[] {
  const root = new URL("../../src/", import.meta.url);
  return (readdirSync(root, { recursive: true }) as string[])
    .filter((path) => path.endsWith(".ts"))
    .map((path) => ({ path, text: readFileSync(new URL(path, root), "utf8") }));
}

describe("docs/protocol.md error codes", () => {
  const table = section("Error codes");

  it("has one row per ErrorCode, and no other", () => {
    const rows = [...table.matchAll(/^\|\s*`([a-z_]+)`\s*\|/gm)].map((m) => m[1]!);
    const codes: string[] = protocol.ErrorCode.options;
    expect({
      withoutRow: codes.filter((code) => !rows.includes(code)),
      notAnErrorCode: rows.filter((code) => !codes.includes(code)),
      duplicateRows: rows.filter((code, i) => rows.indexOf(code) !== i),
    }).toEqual({ withoutRow: [], notAnErrorCode: [], duplicateRows: [] });
    for (const code of protocol.ErrorCode.options) expect(doc).toContain(`\`${code}\``);
  });

  it("gives every HTTP status the source uses for a code", () => {
    const thrown = /AppError\(\s*"([a-z_]+)",\s*(\d{3})/g;
    const statuses = new Map<string, Set<number>>();
    for (const file of sourceFiles()) {
      for (const [, code, status] of file.text.matchAll(thrown)) {
        if (!statuses.has(code!)) statuses.set(code!, new Set());
        statuses.get(code!)!.add(Number(status));
      }
    }
    expect(statuses.size).toBeGreaterThan(10); // the scan found the throws
    const undocumented: string[] = [];
    for (const [code, set] of statuses) {
      const statusCell = row(table, code).split("|")[2] ?? "";
      for (const status of set) if (!mentions(statusCell, status)) undocumented.push(`${code} ${status}`);
    }
    expect(undocumented, "error codes whose HTTP status the doc does not list").toEqual([]);
  });
});

describe("docs/protocol.md close codes", () => {
  const table = section("Close codes");

  it("has one row per CloseCode, with the number, the name and shouldReconnect", () => {
    const rows = [...table.matchAll(/^\|\s*(\d{4})\s*\|\s*`(\w+)`\s*\|\s*(yes|no)\s*\|/gm)].map(
      ([, code, name, reconnect]) => `${code} ${name} reconnect: ${reconnect}`,
    );
    const expected = Object.entries(protocol.CloseCode).map(
      ([name, code]) => `${code} ${name} reconnect: ${protocol.shouldReconnect(code) ? "yes" : "no"}`,
    );
    expect(rows.sort()).toEqual(expected.sort());
  });
});

describe("docs/protocol.md routes", () => {
  const methods = "get|post|put|patch|delete";
  const routeCall = new RegExp(`\\.(${methods})\\(\\s*"(/[^"]*)"`, "g");
  const join = (prefix: string, path: string) => {
    const joined = `${prefix}/${path}`.replace(/\/{2,}/g, "/");
    return joined.length > 1 ? joined.replace(/\/$/, "") : joined;
  };

  /** `METHOD /path` for every route registered in src/app.ts and src/routes/*.ts. */
  function registeredRoutes(): string[] {
    const app = readRepoFile("src/app.ts");
    const prefixes = new Map([...app.matchAll(/app\.route\(\s*"([^"]*)",\s*(\w+)\s*\)/g)].map(([, prefix, name]) => [name!, prefix!]));
    const routes = [...app.matchAll(routeCall)].map(([, method, path]) => `${method!.toUpperCase()} ${join("", path!)}`);
    const routesDir = new URL("../../src/routes/", import.meta.url);
    for (const file of readdirSync(routesDir).filter((f) => f.endsWith(".ts"))) {
      const text = readFileSync(new URL(file, routesDir), "utf8");
      const name = /export const (\w+) = new Hono/.exec(text)?.[1];
      if (!name) continue;
      const prefix = prefixes.get(name);
      if (prefix === undefined) throw new Error(`src/routes/${file}: ${name} is not mounted with app.route in src/app.ts`);
      for (const [, method, path] of text.matchAll(routeCall)) routes.push(`${method!.toUpperCase()} ${join(prefix, path!)}`);
    }
    return routes;
  }

  it("lists every registered route as `METHOD /path`", () => {
    const routes = registeredRoutes();
    // The scan must at least find the routes that existed when this test was written.
    expect(routes).toEqual(
      expect.arrayContaining([
        "GET /healthz",
        "POST /api/otp",
        "POST /api/auth/login",
        "POST /api/auth/refresh",
        "POST /api/auth/logout",
        "GET /api/me",
        "PATCH /api/me",
        "GET /api/devices",
        "DELETE /api/devices/:deviceId",
        "GET /api/users/lookup",
        "GET /api/users/:userId",
        "POST /api/chats",
        "GET /api/chats",
        "GET /api/chats/:chatId",
        "GET /api/chats/:chatId/messages",
        "POST /api/chats/:chatId/messages",
        "GET /chat/:chatId",
      ]),
    );
    const missing = routes.filter((route) => !doc.includes(`\`${route}\``));
    expect(missing, "routes docs/protocol.md does not describe").toEqual([]);
  });
});

describe("docs/protocol.md limits and settings", () => {
  it("gives every fixed limit its value", () => {
    const table = section("Limits");
    const wrong = Object.entries(protocol.Limits).filter(([name, value]) => !mentions(row(table, name), value));
    expect(wrong.map(([name, value]) => `${name} = ${value}`)).toEqual([]);
  });

  it("gives every numeric deployment setting its default and range", () => {
    const config = readRepoFile("src/lib/config.ts");
    const settings = [...config.matchAll(/([A-Z_]+): intVar\(([\d_]+)(?:,\s*([\d_]+))?(?:,\s*([\d_]+))?\)/g)];
    expect(settings.length).toBeGreaterThan(5);
    const table = section("Limits");
    const wrong: string[] = [];
    for (const [, name, ...numbers] of settings) {
      const line = row(table, name!);
      for (const n of numbers.filter((x) => x !== undefined)) {
        if (!mentions(line, Number(n!.replace(/_/g, "")))) wrong.push(`${name}: ${n}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("gives every request rate limiter its limit and period", () => {
    const wrangler = parseToml(readRepoFile("wrangler.toml")) as { ratelimits?: { name: string; simple: { limit: number; period: number } }[] };
    const limiters = wrangler.ratelimits ?? [];
    expect(limiters.length).toBeGreaterThan(0);
    const table = section("Limits");
    const wrong = limiters.filter(({ name, simple }) => {
      const line = row(table, name);
      return !mentions(line, simple.limit) || !mentions(line, simple.period);
    });
    expect(wrong.map((l) => l.name)).toEqual([]);
  });

  it("spells the heartbeat as the source does", () => {
    expect(doc).toContain(`\`${protocol.Heartbeat.request}\``);
    expect(doc).toContain(`\`${protocol.Heartbeat.response}\``);
  });
});

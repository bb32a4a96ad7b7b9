import { readFileSync } from "node:fs";
import { parse } from "smol-toml";
import { describe, expect, it } from "vitest";

const deployConfig = parse(readFileSync(new URL("../../wrangler.toml", import.meta.url), "utf8")) as {
  vars?: Record<string, string>;
  env?: Record<string, unknown>;
};

describe("the configuration `wrangler deploy` uses", () => {
  it("has development mode off and no console OTP sender", () => {
    expect(deployConfig.vars?.DEV_MODE).toBeUndefined();
    expect(deployConfig.vars?.OTP_SENDER).toBe("webhook");
  });

  it("holds no secrets: they come from `wrangler secret put`", () => {
    expect(deployConfig.vars).not.toHaveProperty("JWT_SECRET");
    expect(deployConfig.vars).not.toHaveProperty("HMAC_SECRET");
    expect(deployConfig.env).toBeUndefined(); // no environment that could switch development on
  });

  it("turns development mode on only in the dev script", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { scripts: Record<string, string> };
    const withDevMode = Object.entries(pkg.scripts).filter(([, command]) => command.includes("DEV_MODE"));
    expect(withDevMode.map(([name]) => name)).toEqual(["dev"]);
    expect(pkg.scripts.deploy).not.toContain("--var");
  });
});

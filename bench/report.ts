/**
 * The printed table and the JSON report file.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TableRow } from "./lib/scenario.ts";

export type ScenarioReport = {
  name: string;
  title: string;
  figures: Record<string, unknown>;
  errors: Record<string, string>;
  rows: TableRow[];
  notes: string[];
  elapsedMs: number;
};

const HEADERS = ["Scenario", "Metric", "workerd (wrangler dev)", "bare ws", "workerd/bare", "Target", "Result"] as const;

/** A Markdown table: readable in a terminal and pasteable into an issue. */
export function formatTable(scenarios: readonly ScenarioReport[]): string {
  const lines: string[][] = [];
  for (const scenario of scenarios) {
    const errorText = Object.entries(scenario.errors).map(([target, error]) => `${target} ERROR: ${error}`);
    scenario.rows.forEach((row, index) => {
      lines.push([index === 0 ? scenario.title : "", row.metric, row.workerd, row.bare, row.ratio, row.target, row.verdict]);
    });
    if (scenario.rows.length === 0) lines.push([scenario.title, "(no figures)", "", "", "", "", ""]);
    for (const text of errorText) lines.push(["", text.slice(0, 160), "", "", "", "", ""]);
  }
  const widths = HEADERS.map((header, column) => Math.max(header.length, ...lines.map((line) => line[column]!.length)));
  const render = (cells: readonly string[]) => `| ${cells.map((cell, column) => cell.padEnd(widths[column]!)).join(" | ")} |`;
  return [render(HEADERS), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...lines.map(render)].join("\n");
}

export function verdictCounts(scenarios: readonly ScenarioReport[]): { ok: number; miss: number; inconclusive: number } {
  let ok = 0;
  let miss = 0;
  let inconclusive = 0;
  for (const row of scenarios.flatMap((s) => s.rows)) {
    if (row.verdict === "OK") ok++;
    if (row.verdict === "MISS") miss++;
    if (row.verdict === "n/c") inconclusive++;
  }
  return { ok, miss, inconclusive };
}

/** Writes the report as bench/results/bench-<mode>-<timestamp>.json and returns its path. */
export function writeReport(report: object, mode: string, startedAt: Date): string {
  const directory = new URL("./results/", import.meta.url).pathname;
  mkdirSync(directory, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:]/g, "-").replace(/\.\d+Z$/, "Z");
  const path = join(directory, `bench-${mode}-${stamp}.json`);
  // NaN and Infinity are not JSON: write them as null rather than lose the key.
  writeFileSync(path, `${JSON.stringify(report, (_key, value) => (typeof value === "number" && !Number.isFinite(value) ? null : value), 2)}\n`);
  return path;
}

/**
 * Media throughput. One member uploads files of each size over REST (the Worker
 * streams them into its local R2; the bare server streams them to a file on disk),
 * then downloads each in full, and finally reads 64 KiB ranges of the largest file
 * (206), timing the first byte. Every download is compared with what was uploaded,
 * byte for byte, and every range with its slice.
 *
 * Uploads and downloads run one at a time, as one phone would: the figures are the
 * throughput of one transfer (MB/s of payload, wall time from the request to the last
 * byte of the answer) and the server CPU per MB, beside the bare Node HTTP server's.
 */
import { randomBytes } from "node:crypto";
import type { Target } from "../targets/target.ts";
import { LatencyRecorder, type LatencySummary } from "../lib/latency.ts";
import { round } from "../lib/process-stats.ts";
import { fmt, ms, PhaseMeter, ratio, serverCpuSeconds, verdict, type CpuFigures, type Scenario } from "../lib/scenario.ts";

const MB = 1_000_000;

/** A PNG signature, then random bytes: passes the Worker's magic-byte check, does not compress. */
function pngLike(size: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  bytes.set(randomBytes(size));
  bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52], 0);
  return bytes;
}

type TransferFigures = { files: number; bytes: number; seconds: number; mbPerSecond: number; perFile: LatencySummary; cpu: CpuFigures; serverCpuMsPerMb: number };
export type MediaSizeFigures = { size: number; upload: TransferFigures; download: TransferFigures; identical: boolean; problem: string };
export type MediaFigures = {
  sizes: MediaSizeFigures[];
  range?: { samples: number; bytes: number; firstByte: LatencySummary; identical: boolean };
};

export const media: Scenario<MediaFigures> = {
  name: "media",
  title: "media upload and download",
  targets: ["workerd", "bare"],

  async run(target: Target, context) {
    const p = context.params.media;
    const [user] = await target.users(1);
    const chatId = await target.createGroup([user!], "media");
    const base = target.socketUrl(chatId).replace(/^ws/, "http").replace(/\/chat\/.*$/, "");
    const auth = { Authorization: `Bearer ${user!.credentials}` };
    const mediaUrl = (mediaId: string) => `${base}/api/chats/${chatId}/media/${mediaId}`;
    const figures: MediaFigures = { sizes: [] };
    let largest: { mediaId: string; bytes: Uint8Array<ArrayBuffer> } | null = null;

    for (const { size, files } of p.sizes) {
      const contents = Array.from({ length: files }, () => pngLike(size));
      const ids: string[] = [];
      let problem = "";
      const upload = await transfer(target, context, `media-upload-${size}`, contents.length, size, async (index) => {
        const response = await fetch(`${base}/api/chats/${chatId}/media?name=bench-${index}.png`, {
          method: "POST",
          headers: { ...auth, "Content-Type": "image/png" },
          body: contents[index]!,
        });
        const text = await response.text();
        if (response.status !== 201) throw new Error(`upload answered ${response.status}: ${text.slice(0, 200)}`);
        ids.push((JSON.parse(text) as { mediaId: string }).mediaId);
      });
      let identical = true;
      const download = await transfer(target, context, `media-download-${size}`, contents.length, size, async (index) => {
        const response = await fetch(mediaUrl(ids[index]!), { headers: auth });
        const body = new Uint8Array(await response.arrayBuffer());
        if (response.status !== 200) throw new Error(`download answered ${response.status}`);
        if (!Buffer.from(body).equals(Buffer.from(contents[index]!))) {
          identical = false;
          problem ||= `file ${index} of ${fmt(size)} bytes differs after the round trip`;
        }
      });
      figures.sizes.push({ size, upload, download, identical, problem });
      context.log(`    ${target.name}: ${fmt(size / MB)} MB x ${files}: up ${upload.mbPerSecond} MB/s, down ${download.mbPerSecond} MB/s${identical ? "" : `, ${problem}`}`);
      if (!largest || size > largest.bytes.length) largest = { mediaId: ids[0]!, bytes: contents[0]! };
    }

    if (largest) {
      const firstByte = new LatencyRecorder();
      let identical = true;
      for (let i = 0; i < p.rangeSamples; i++) {
        const start = Math.floor(((i * 7919) % 1000) / 1000 * (largest.bytes.length - p.rangeBytes));
        const end = start + p.rangeBytes - 1;
        const startedAt = performance.now();
        const response = await fetch(mediaUrl(largest.mediaId), { headers: { ...auth, Range: `bytes=${start}-${end}` } });
        const reader = response.body!.getReader();
        const chunks: Uint8Array[] = [];
        let first = true;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (first && value.byteLength > 0) {
            firstByte.recordMs(performance.now() - startedAt);
            first = false;
          }
          chunks.push(value);
        }
        const body = Buffer.concat(chunks);
        if (response.status !== 206 || !body.equals(Buffer.from(largest.bytes.subarray(start, end + 1)))) identical = false;
      }
      figures.range = { samples: p.rangeSamples, bytes: p.rangeBytes, firstByte: firstByte.summary(), identical };
    }
    return figures;
  },

  rows({ workerd, bare }, context) {
    const rows: ReturnType<Scenario<MediaFigures>["rows"]> = [];
    const p = context.params.media;
    for (const { size, files } of p.sizes) {
      const w = workerd?.sizes.find((s) => s.size === size);
      const b = bare?.sizes.find((s) => s.size === size);
      const label = `${fmt(size / MB)} MB x ${files}`;
      rows.push(
        { metric: `upload ${label}, MB/s (p50 per file)`, workerd: rate(w?.upload), bare: rate(b?.upload), ratio: ratio(w?.upload.mbPerSecond, b?.upload.mbPerSecond), target: "", verdict: "" },
        { metric: `download ${label}, MB/s (p50 per file)`, workerd: rate(w?.download), bare: rate(b?.download), ratio: ratio(w?.download.mbPerSecond, b?.download.mbPerSecond), target: "bytes identical", verdict: verdict(w ? w.identical : undefined) },
        { metric: `  server CPU per MB, up / down`, workerd: cpu(w), bare: cpu(b), ratio: "", target: "", verdict: "" },
      );
    }
    const w = workerd?.range;
    const b = bare?.range;
    rows.push({
      metric: `range read (206, ${fmt(p.rangeBytes / 1024)} KiB of the largest), first byte p50 / p99`,
      workerd: w ? `${ms(w.firstByte.p50Ms)} / ${ms(w.firstByte.p99Ms)}` : "-",
      bare: b ? `${ms(b.firstByte.p50Ms)} / ${ms(b.firstByte.p99Ms)}` : "-",
      ratio: ratio(w?.firstByte.p50Ms, b?.firstByte.p50Ms),
      target: "exact bytes",
      verdict: verdict(w ? w.identical : undefined),
    });
    return rows;
  },

  notes({ workerd }) {
    const notes = ["media: the bare server streams uploads to a file on disk and serves them back with Range; no auth, no membership check, no magic bytes"];
    for (const size of workerd?.sizes ?? []) if (size.problem) notes.push(`media: ${size.problem}`);
    return notes;
  },
};

function rate(figures: TransferFigures | undefined): string {
  return figures ? `${fmt(figures.mbPerSecond)} (${ms(figures.perFile.p50Ms)})` : "-";
}

function cpu(figures: MediaSizeFigures | undefined): string {
  return figures ? `${fmt(figures.upload.serverCpuMsPerMb)} / ${fmt(figures.download.serverCpuMsPerMb)} ms` : "-";
}

/** Runs `files` transfers one after another, timing each, with the phase's CPU. */
async function transfer(
  target: Target,
  context: Parameters<Scenario<MediaFigures>["run"]>[1],
  phase: string,
  files: number,
  size: number,
  one: (index: number) => Promise<void>,
): Promise<TransferFigures> {
  const perFile = new LatencyRecorder();
  const meter = new PhaseMeter(target, context, phase);
  await meter.start();
  const startedAt = performance.now();
  for (let index = 0; index < files; index++) {
    const fileStartedAt = performance.now();
    await one(index);
    perFile.recordMs(performance.now() - fileStartedAt);
  }
  const seconds = (performance.now() - startedAt) / 1000;
  const cpuFigures = await meter.stop();
  const megabytes = (files * size) / MB;
  return {
    files,
    bytes: files * size,
    seconds: round(seconds, 3),
    mbPerSecond: round(megabytes / seconds, 1),
    perFile: perFile.summary(),
    cpu: cpuFigures,
    serverCpuMsPerMb: round((serverCpuSeconds(cpuFigures) * 1000) / megabytes, 2),
  };
}

/**
 * Latency recording in an HDR histogram. Values are recorded in microseconds (integers,
 * 3 significant digits) and reported in milliseconds.
 */
import hdr from "hdr-histogram-js";
import { round } from "./process-stats.ts";

const MAX_TRACKABLE_US = 120_000_000; // two minutes: anything slower is a failure anyway

export type LatencySummary = {
  count: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  meanMs: number;
};

export class LatencyRecorder {
  readonly #histogram = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: MAX_TRACKABLE_US,
    numberOfSignificantValueDigits: 3,
    autoResize: false,
  });
  #count = 0;

  /** Records one latency given in milliseconds (performance.now() differences). */
  recordMs(ms: number): void {
    const us = Math.round(ms * 1000);
    this.#histogram.recordValue(us < 1 ? 1 : us > MAX_TRACKABLE_US ? MAX_TRACKABLE_US : us);
    this.#count++;
  }

  get count(): number {
    return this.#count;
  }

  percentileMs(percentile: number): number {
    if (this.#count === 0) return Number.NaN;
    return round(this.#histogram.getValueAtPercentile(percentile) / 1000, 3);
  }

  summary(): LatencySummary {
    if (this.#count === 0) {
      return { count: 0, p50Ms: Number.NaN, p90Ms: Number.NaN, p99Ms: Number.NaN, p999Ms: Number.NaN, maxMs: Number.NaN, meanMs: Number.NaN };
    }
    return {
      count: this.#count,
      p50Ms: this.percentileMs(50),
      p90Ms: this.percentileMs(90),
      p99Ms: this.percentileMs(99),
      p999Ms: this.percentileMs(99.9),
      maxMs: round(this.#histogram.maxValue / 1000, 3),
      meanMs: round(this.#histogram.mean / 1000, 3),
    };
  }
}

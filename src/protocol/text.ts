import { z } from "zod";

/**
 * The text rules every client-sent string follows. JSON can carry a lone surrogate
 * (`"\ud800"`), but UTF-8 cannot: storage would replace it, so what was acknowledged
 * and delivered live would differ from what history returns, a retry would no longer
 * match its original, and a byte limit checked on the UTF-16 string would not hold
 * for the stored text. So ill-formed strings are refused at the protocol boundary.
 *
 * Lengths (`min`/`max`) count UTF-16 code units, after normalisation for the
 * normalised kinds; message bodies are limited in UTF-8 bytes instead.
 */

/** `String.prototype.isWellFormed` (ES2024): no unpaired surrogate code unit. */
export function isWellFormed(value: string): boolean {
  return (value as string & { isWellFormed(): boolean }).isWellFormed();
}

export const TextMessages = {
  wellFormed: "must be well-formed Unicode (no unpaired surrogate U+D800-U+DFFF)",
  control: "must not contain control characters (U+0000-U+001F, U+007F-U+009F)",
  controlExceptLineBreaks: "must not contain control characters other than tab, line feed and carriage return",
  bidi: "must not contain bidirectional embedding, override or isolate characters (U+202A-U+202E, U+2066-U+2069)",
} as const;

/** C0 and C1 controls (`\p{Cc}`), NUL included. */
const NO_CONTROL = /^\P{Cc}*$/u;
/** `\p{Cc}` except tab, line feed and carriage return. */
const NO_CONTROL_EXCEPT_LINE_BREAKS = /^(?:[\t\n\r]|\P{Cc})*$/u;
/** LRE, RLE, PDF, LRO, RLO and LRI, RLI, FSI, PDI. */
const NO_BIDI_CONTROL = /^[^\u202A-\u202E\u2066-\u2069]*$/u;

/**
 * Any text a client sends, otherwise unchanged: message bodies (which may be
 * ciphertext, so never normalised), client-chosen ids, tokens. Chain `.min()`,
 * `.max()` and other checks after it; they run only on well-formed text.
 */
export function text(): z.ZodString {
  return z.string().refine(isWellFormed, { message: TextMessages.wellFormed, abort: true });
}

/**
 * A short name shown in lists and headers (display names, group names, device
 * names): well-formed, normalised to NFC and trimmed, then 1 to `max` UTF-16 code
 * units, with no control characters and no bidirectional embedding, override or
 * isolate characters (which could reorder the text shown around the name).
 */
export function nameText(max: number): z.ZodString {
  return text()
    .normalize("NFC")
    .trim()
    .min(1, "must not be empty")
    .max(max, `must be at most ${max} UTF-16 code units after NFC normalisation`)
    .regex(NO_CONTROL, TextMessages.control)
    .regex(NO_BIDI_CONTROL, TextMessages.bidi);
}

/**
 * Free text shown on its own (a profile's about, a group's description):
 * well-formed, normalised to NFC and trimmed, then at most `max` UTF-16 code units
 * (empty is allowed). Line breaks and tabs are allowed, other control characters
 * (NUL included) are not. Bidirectional controls are allowed, since mixed
 * right-to-left text needs them; clients show such text in its own bidi isolate.
 */
export function longText(max: number): z.ZodString {
  return text()
    .normalize("NFC")
    .trim()
    .max(max, `must be at most ${max} UTF-16 code units after NFC normalisation`)
    .regex(NO_CONTROL_EXCEPT_LINE_BREAKS, TextMessages.controlExceptLineBreaks);
}

/**
 * The UTF-8 length of a well-formed string, without encoding it. Each UTF-16 unit
 * below U+0080 is 1 byte, below U+0800 2, a surrogate pair 4 (2 per unit), other 3.
 */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800 || (unit >= 0xd800 && unit <= 0xdfff)) bytes += 1;
    else bytes += 2;
  }
  return bytes;
}

// A minimal JSON reader and writer for the guest (AssemblyScript's standard library has
// no JSON). It reads a whole message into a small tree, keeping each value's source span
// so that a request id can be echoed byte for byte.

export const J_NULL: i32 = 0;
export const J_BOOL: i32 = 1;
export const J_NUM: i32 = 2;
export const J_STR: i32 = 3;
export const J_ARR: i32 = 4;
export const J_OBJ: i32 = 5;

/** Nesting deeper than this is refused (the host never sends anything that deep). */
const MAX_DEPTH: i32 = 64;

export class JValue {
  kind: i32 = J_NULL;
  /** Source span of the value (for echoing it verbatim). */
  start: i32 = 0;
  end: i32 = 0;
  /** A string's decoded text; a number's or literal's source text. */
  text: string = "";
  /** Array elements, or object member values (in order). */
  items: Array<JValue> = [];
  /** Object member names, parallel to `items`. */
  keys: Array<string> = [];

  /** The member `key` of an object, or null. */
  get(key: string): JValue | null {
    if (this.kind != J_OBJ) return null;
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] == key) return this.items[i];
    }
    return null;
  }

  /** Element `i` of an array, or null. */
  at(i: i32): JValue | null {
    if (this.kind != J_ARR || i < 0 || i >= this.items.length) return null;
    return this.items[i];
  }
}

/** A string member of an object, or `fallback`. */
export function strOf(v: JValue | null, fallback: string): string {
  if (v == null) return fallback;
  return v.kind == J_STR ? v.text : fallback;
}

/**
 * A non-negative integer: a JSON number, or a string of digits with an optional `msat`
 * suffix; -1 when it is neither.
 */
export function u64Of(v: JValue | null): i64 {
  if (v == null) return -1;
  if (v.kind != J_NUM && v.kind != J_STR) return -1;
  let s = v.text;
  if (v.kind == J_STR && s.endsWith("msat")) s = s.substring(0, s.length - 4);
  if (s.length == 0 || s.length > 18) return -1;
  let n: i64 = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    n = n * 10 + <i64>(c - 48);
  }
  return n;
}

export class Parser {
  src: string;
  pos: i32 = 0;
  ok: bool = true;

  constructor(src: string) {
    this.src = src;
  }

  /** Parses the whole text; null if it is not exactly one JSON value. */
  static parse(src: string): JValue | null {
    const p = new Parser(src);
    const v = p.value(0);
    p.ws();
    if (!p.ok || p.pos != src.length) return null;
    return v;
  }

  private peek(): i32 {
    return this.pos < this.src.length ? this.src.charCodeAt(this.pos) : -1;
  }

  private fail(): JValue {
    this.ok = false;
    return new JValue();
  }

  ws(): void {
    while (this.pos < this.src.length) {
      const c = this.src.charCodeAt(this.pos);
      if (c == 32 || c == 9 || c == 10 || c == 13) this.pos++;
      else break;
    }
  }

  private literal(word: string, kind: i32): JValue {
    if (this.src.substr(this.pos, word.length) != word) return this.fail();
    const v = new JValue();
    v.kind = kind;
    v.start = this.pos;
    this.pos += word.length;
    v.end = this.pos;
    v.text = word;
    return v;
  }

  value(depth: i32): JValue {
    if (!this.ok) return new JValue();
    if (depth > MAX_DEPTH) return this.fail();
    this.ws();
    const c = this.peek();
    if (c == 123) return this.object(depth); // {
    if (c == 91) return this.array(depth); // [
    if (c == 34) return this.string(); // "
    if (c == 116) return this.literal("true", J_BOOL);
    if (c == 102) return this.literal("false", J_BOOL);
    if (c == 110) return this.literal("null", J_NULL);
    if (c == 45 || (c >= 48 && c <= 57)) return this.number();
    return this.fail();
  }

  private number(): JValue {
    const v = new JValue();
    v.kind = J_NUM;
    v.start = this.pos;
    while (this.pos < this.src.length) {
      const c = this.src.charCodeAt(this.pos);
      // digits, sign, dot, exponent
      if ((c >= 48 && c <= 57) || c == 45 || c == 43 || c == 46 || c == 101 || c == 69) {
        this.pos++;
      } else {
        break;
      }
    }
    v.end = this.pos;
    v.text = this.src.substring(v.start, v.end);
    return v;
  }

  private string(): JValue {
    const v = new JValue();
    v.kind = J_STR;
    v.start = this.pos;
    this.pos++; // opening quote
    let out = "";
    let run = this.pos;
    while (true) {
      if (this.pos >= this.src.length) return this.fail();
      const c = this.src.charCodeAt(this.pos);
      if (c == 34) {
        out += this.src.substring(run, this.pos);
        this.pos++;
        break;
      }
      if (c < 32) return this.fail();
      if (c != 92) {
        this.pos++;
        continue;
      }
      out += this.src.substring(run, this.pos);
      this.pos++;
      if (this.pos >= this.src.length) return this.fail();
      const e = this.src.charCodeAt(this.pos);
      this.pos++;
      if (e == 34) out += "\"";
      else if (e == 92) out += "\\";
      else if (e == 47) out += "/";
      else if (e == 98) out += "\b";
      else if (e == 102) out += "\f";
      else if (e == 110) out += "\n";
      else if (e == 114) out += "\r";
      else if (e == 116) out += "\t";
      else if (e == 117) {
        if (this.pos + 4 > this.src.length) return this.fail();
        let code: i32 = 0;
        for (let i = 0; i < 4; i++) {
          const h = hexDigit(this.src.charCodeAt(this.pos + i));
          if (h < 0) return this.fail();
          code = code * 16 + h;
        }
        this.pos += 4;
        // UTF-16 code units: a surrogate pair is two \u escapes, which concatenate.
        out += String.fromCharCode(code);
      } else {
        return this.fail();
      }
      run = this.pos;
    }
    v.end = this.pos;
    v.text = out;
    return v;
  }

  private array(depth: i32): JValue {
    const v = new JValue();
    v.kind = J_ARR;
    v.start = this.pos;
    this.pos++;
    this.ws();
    if (this.peek() == 93) {
      this.pos++;
      v.end = this.pos;
      return v;
    }
    while (this.ok) {
      v.items.push(this.value(depth + 1));
      this.ws();
      const c = this.peek();
      this.pos++;
      if (c == 93) break;
      if (c != 44) return this.fail();
    }
    v.end = this.pos;
    return v;
  }

  private object(depth: i32): JValue {
    const v = new JValue();
    v.kind = J_OBJ;
    v.start = this.pos;
    this.pos++;
    this.ws();
    if (this.peek() == 125) {
      this.pos++;
      v.end = this.pos;
      return v;
    }
    while (this.ok) {
      this.ws();
      if (this.peek() != 34) return this.fail();
      const k = this.string();
      this.ws();
      if (this.peek() != 58) return this.fail();
      this.pos++;
      const item = this.value(depth + 1);
      v.keys.push(k.text);
      v.items.push(item);
      this.ws();
      const c = this.peek();
      this.pos++;
      if (c == 125) break;
      if (c != 44) return this.fail();
    }
    v.end = this.pos;
    return v;
  }
}

function hexDigit(c: i32): i32 {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

const HEX = "0123456789abcdef";

/** `s` as a JSON string literal. */
export function quote(s: string): string {
  let out = "\"";
  let run = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c == 34 || c == 92 || c < 32) {
      out += s.substring(run, i);
      if (c == 34) out += "\\\"";
      else if (c == 92) out += "\\\\";
      else out += "\\u00" + HEX.charAt(c >> 4) + HEX.charAt(c & 15);
      run = i + 1;
    }
  }
  out += s.substring(run);
  return out + "\"";
}

/**
 * JSON merge patches (RFC 7396) as the AutoSaver uses them: applying one, combining two
 * into one (`coalesce`, the Rust SDK's rule), the JSON Pointers a patch touches, and the
 * comparisons a 412 rebase needs. Pure functions over JSON values; nothing here knows
 * IndexedDB or HTTP.
 *
 * @module
 */

/** A JSON object: a merge patch, or a document's state. */
export type JsonObject = { [key: string]: unknown };

/** Whether `value` is a JSON object (not an array, not null). */
export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `object[key]` if it is an own member (so `__proto__` or `toString` never reach the prototype). */
function own(object: JsonObject, key: string): unknown {
  return Object.hasOwn(object, key) ? object[key] : undefined;
}

/** Sets own member `key`; plain assignment would set the prototype for `__proto__`. */
function put(object: JsonObject, key: string, value: unknown): void {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
}

/**
 * `patch` applied to `target` (RFC 7396), as a new value: `null` deletes a member, an
 * object merges into the member, anything else replaces it. `target` is not changed;
 * members the patch does not touch are shared with it.
 */
export function applyPatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch;
  const result: JsonObject = {};
  if (isObject(target)) for (const key of Object.keys(target)) put(result, key, target[key]);
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else put(result, key, applyPatch(own(result, key), value));
  }
  return result;
}

/**
 * Merges merge patch `next` into `into` so that applying the result equals applying
 * `into` then `next`; `false` (and `into` unchanged) when no single patch can say that:
 * where `into` sets a member to a non-object (a deletion, a string, an array) and `next`
 * merges an object into it. The Rust SDK's `coalesce`, rule for rule.
 */
export function coalesce(into: JsonObject, next: JsonObject): boolean {
  if (!fits(into, next)) return false;
  merge(into, next);
  return true;
}

function fits(into: unknown, next: unknown): boolean {
  if (!isObject(into) || !isObject(next)) return false;
  return Object.entries(next).every(([key, value]) => {
    if (!isObject(value) || !Object.hasOwn(into, key)) return true;
    return isObject(into[key]) && fits(into[key], value);
  });
}

function merge(into: JsonObject, next: JsonObject): void {
  for (const [key, value] of Object.entries(next)) {
    const existing = own(into, key);
    // A copy, so later merges into `into` never change the caller's `next`.
    if (isObject(existing) && isObject(value)) merge(existing, value);
    else put(into, key, structuredClone(value));
  }
}

/** JSON Pointers (RFC 6901) of the values a merge patch sets or deletes, in the patch's order. */
export function touched(patch: unknown, prefix = "", out: string[] = []): string[] {
  if (!isObject(patch)) return out;
  for (const [key, value] of Object.entries(patch)) {
    const pointer = `${prefix}/${key.replaceAll("~", "~0").replaceAll("/", "~1")}`;
    if (isObject(value) && Object.keys(value).length > 0) touched(value, pointer, out);
    else out.push(pointer);
  }
  return out;
}

/** The value at JSON Pointer `pointer` in `document`, or undefined where there is none. */
export function at(document: unknown, pointer: string): unknown {
  let value = document;
  for (const token of pointer.split("/").slice(1)) {
    const key = token.replaceAll("~1", "/").replaceAll("~0", "~");
    if (typeof value !== "object" || value === null || !Object.hasOwn(value, key)) return undefined;
    value = (value as JsonObject)[key];
  }
  return value;
}

/** Whether two JSON values are equal (member order does not matter). */
export function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  return (
    keys.length === Object.keys(b).length &&
    keys.every((key) => Object.hasOwn(b, key) && same((a as JsonObject)[key], (b as JsonObject)[key]))
  );
}

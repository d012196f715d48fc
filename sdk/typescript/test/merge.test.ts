// Merge patches (src/merge.ts): RFC 7396's own examples, the Rust SDK's coalescing cases,
// and fast-check properties: combining patches as the outbox does, then applying the
// records in order, equals applying every patch in order; and a field deleted (or set to
// a non-object) then given an object never combines. The properties compare against a
// reference RFC 7396 written here, not against the code under test.

import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { type JsonObject, applyPatch, at, coalesce, same, touched } from "../src/merge.js";

/** RFC 7396 as the RFC's pseudo-code says, with own members only. */
function reference(target: unknown, patch: unknown): unknown {
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch;
  const result: Record<string, unknown> = {};
  if (typeof target === "object" && target !== null && !Array.isArray(target)) {
    for (const [key, value] of Object.entries(target)) Object.defineProperty(result, key, { value, enumerable: true, writable: true, configurable: true });
  }
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else {
      const merged = reference(Object.hasOwn(result, key) ? result[key] : undefined, value);
      Object.defineProperty(result, key, { value: merged, enumerable: true, writable: true, configurable: true });
    }
  }
  return result;
}

/** JSON with members sorted, so equal values print alike. */
function canonical(value: unknown): string {
  if (typeof value !== "object" || value === null) return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((key) => `${JSON.stringify(key)}:${canonical((value as Record<string, unknown>)[key])}`).join(",")}}`;
}

/** Appends `patch` to `records` the way the outbox does: into the last record if they combine, else as a new one. */
function append(records: JsonObject[], patch: JsonObject): void {
  const last = records.at(-1);
  if (!last || !coalesce(last, structuredClone(patch))) records.push(structuredClone(patch));
}

// Few keys, so that patches often touch the same members; `d/e` and `~` test pointer escapes.
const key = fc.constantFrom("a", "b", "c", "d/e", "~");
const leaf = fc.oneof(fc.constant(null), fc.integer({ min: 0, max: 9 }), fc.constantFrom("x", "y"), fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 2 }));
const { patch } = fc.letrec<{ patch: JsonObject; value: unknown }>((tie) => ({
  patch: fc.dictionary(key, tie("value"), { maxKeys: 3 }),
  value: fc.oneof({ depthSize: "small", withCrossShrink: true }, leaf, tie("patch")),
}));
const documentState = patch.map((p) => reference({}, p));

describe("merge patches", () => {
  test("applyPatch gives RFC 7396's results (its appendix A)", () => {
    const cases: [unknown, unknown, unknown][] = [
      [{ a: "b" }, { a: "c" }, { a: "c" }],
      [{ a: "b" }, { b: "c" }, { a: "b", b: "c" }],
      [{ a: "b" }, { a: null }, {}],
      [{ a: "b", b: "c" }, { a: null }, { b: "c" }],
      [{ a: ["b"] }, { a: "c" }, { a: "c" }],
      [{ a: "c" }, { a: ["b"] }, { a: ["b"] }],
      [{ a: { b: "c" } }, { a: { b: "d", c: null } }, { a: { b: "d" } }],
      [{ a: [{ b: "c" }] }, { a: [1] }, { a: [1] }],
      [["a", "b"], ["c", "d"], ["c", "d"]],
      [{ a: "b" }, ["c"], ["c"]],
      [{ a: "foo" }, null, null],
      [{ a: "foo" }, "bar", "bar"],
      [{ e: null }, { a: 1 }, { e: null, a: 1 }],
      [[1, 2], { a: "b", c: null }, { a: "b" }],
      [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
    ];
    for (const [target, patch, result] of cases) expect(applyPatch(target, patch)).toEqual(result);
  });

  test("applyPatch leaves its target alone and keeps __proto__ an ordinary member", () => {
    const target = { a: { x: 1 }, b: 2 };
    const patched = applyPatch(target, { a: { y: 2 } });
    expect(target).toEqual({ a: { x: 1 }, b: 2 });
    expect(patched).toEqual({ a: { x: 1, y: 2 }, b: 2 });
    const hostile = applyPatch({}, JSON.parse('{"__proto__": {"polluted": true}}')) as JsonObject;
    expect(Object.getPrototypeOf(hostile)).toBe(Object.prototype);
    expect(Object.keys(hostile)).toEqual(["__proto__"]);
    expect(({} as JsonObject).polluted).toBeUndefined();
  });

  test("coalesced patches equal applying both (the Rust SDK's cases)", () => {
    const document = { a: { x: 1, y: 2 }, b: 1, c: [1] };
    const pairs: [JsonObject, JsonObject][] = [
      [{ a: { x: 5 } }, { a: { y: null }, b: 2 }],
      [{ b: null }, { b: 3 }],
      [{ c: [2] }, { a: { z: { deep: true } } }],
    ];
    for (const [first, second] of pairs) {
      const both = reference(reference(document, first), second);
      const combined = structuredClone(first);
      expect(coalesce(combined, second)).toBe(true);
      expect(reference(document, combined)).toEqual(both);
    }
  });

  test("a field deleted, then merged with an object, is not one patch; the first is left unchanged", () => {
    const first = { a: null };
    expect(coalesce(first, { a: { x: 1 } })).toBe(false);
    expect(first).toEqual({ a: null });
    // The same for any non-object: a string, a number, an array.
    for (const value of ["s", 1, [1]]) expect(coalesce({ a: value }, { a: { x: 1 } })).toBe(false);
    // An object into an object combines; so does a member the first patch does not name.
    expect(coalesce({ a: { x: 1 } }, { a: { y: 2 }, b: { z: 3 } })).toBe(true);
  });

  test("coalesce copies what it takes, so later merges never change the caller's patch", () => {
    const into: JsonObject = {};
    const next = { a: { x: 1 } };
    coalesce(into, next);
    coalesce(into, { a: { y: 2 } });
    expect(next).toEqual({ a: { x: 1 } });
    expect(into).toEqual({ a: { x: 1, y: 2 } });
  });

  test("property: the outbox's records applied in order equal every patch applied in order", () => {
    fc.assert(
      fc.property(documentState, fc.array(patch, { maxLength: 8 }), (start, patches) => {
        const records: JsonObject[] = [];
        for (const p of patches) append(records, p);
        const expected = patches.reduce<unknown>(reference, start);
        expect(canonical(records.reduce<unknown>(reference, start))).toBe(canonical(expected));
        expect(canonical(patches.reduce<unknown>(applyPatch, start))).toBe(canonical(expected));
        expect(records.length).toBeLessThanOrEqual(Math.max(patches.length, 0));
      }),
      { numRuns: 3000 },
    );
  });

  test("property: a member set to a non-object, then given an object, starts a new record", () => {
    fc.assert(
      fc.property(patch, key, leaf, patch, (before, field, value, inner) => {
        const first = structuredClone(before);
        Object.defineProperty(first, field, { value, enumerable: true, writable: true, configurable: true });
        const records: JsonObject[] = [];
        append(records, first);
        append(records, { [field]: inner });
        expect(records).toHaveLength(2);
        expect(canonical(records[0])).toBe(canonical(first));
      }),
      { numRuns: 1000 },
    );
  });

  test("touched: a pointer for each value set or deleted, escaped; at and same read them back", () => {
    const patch = { title: "t", body: { p1: "x", p2: null }, "a/b": { "~c": 1 }, empty: {} };
    expect(touched(patch)).toEqual(["/title", "/body/p1", "/body/p2", "/a~1b/~0c", "/empty"]);
    const document = { title: "t", body: { p1: "x" }, "a/b": { "~c": [1, { d: 2 }] } };
    expect(at(document, "/a~1b/~0c/1/d")).toBe(2);
    expect(at(document, "/body/p2")).toBeUndefined();
    expect(at(document, "/title/length")).toBeUndefined();
    expect(same({ a: [1, { b: 2 }], c: null }, { c: null, a: [1, { b: 2 }] })).toBe(true);
    expect(same({ a: [1, 2] }, { a: { 0: 1, 1: 2 } })).toBe(false);
    expect(same({ a: undefined }, {})).toBe(false);
  });
});

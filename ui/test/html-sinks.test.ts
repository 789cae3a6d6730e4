/// <reference types="vite/client" />
import { describe, expect, it } from "vitest";

// Names, namespaces, aliases and errors reach the window from the cluster and
// the kubeconfig: text that a hostile cluster or file chooses. The window
// writes them with textContent and setAttribute (src/dom.ts's `h`), never as
// HTML; this fails on the first source that parses a string as HTML.

const sources = import.meta.glob("../src/**/*.ts", { query: "?raw", import: "default", eager: true }) as Record<
  string,
  string
>;

const HTML_SINKS = [
  /\.innerHTML\b/,
  /\.outerHTML\b/,
  /\binsertAdjacentHTML\b/,
  /\bdocument\.write(ln)?\b/,
  /\bcreateContextualFragment\b/,
  /\bDOMParser\b/,
  /\bsrcdoc\b/,
];

describe("the window's sources", () => {
  it("are all read", () => {
    expect(Object.keys(sources)).toEqual(expect.arrayContaining(["../src/rows.ts", "../src/main.ts", "../src/dom.ts"]));
  });

  it("never parse text as HTML", () => {
    for (const [file, text] of Object.entries(sources)) {
      for (const sink of HTML_SINKS) {
        expect(sink.test(text), `${file} uses ${sink}`).toBe(false);
      }
    }
  });

  it("would catch one", () => {
    expect(HTML_SINKS.some((sink) => sink.test("row.innerHTML = name;"))).toBe(true);
  });
});

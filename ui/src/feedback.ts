// What the window tells the user in passing: a toast at the bottom, and an
// error's text.

import { byId } from "./dom";

let toastTimer: number | undefined;
export function toast(message: string, kind: "info" | "error" = "info"): void {
  const el = byId("toast");
  el.textContent = message;
  el.className = `toast visible ${kind}`;
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => (el.className = "toast"), kind === "error" ? 6000 : 2200);
}

export const reason = (e: unknown): string => (e instanceof Error ? e.message : String(e));


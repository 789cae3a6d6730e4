import { defineConfig } from "vitest/config";

// The window loads the build from disk (tauri's custom protocol), so keep the
// output self-contained and free of inline scripts (the CSP forbids them).
export default defineConfig({
  clearScreen: false,
  build: {
    target: "safari15",
    outDir: "dist",
    emptyOutDir: true,
    modulePreload: { polyfill: false },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});

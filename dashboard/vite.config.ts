import { defineConfig } from "vite";

// Preact's JSX through esbuild; hashed files under assets/ (served immutable);
// nothing inline, so the gateway's Content-Security-Policy needs no exception.
export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    assetsDir: "assets",
    target: "es2022",
    sourcemap: false,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
});

// The dashboard's bench rows: its bundle size (dist/, raw and gzip) and its
// first load on loopback (a fresh browser context each time, so nothing
// cached: navigation until the login form is on screen), against a reference
// measured the same way in the same run: loading the server's /openapi.json.
//
// BINARY: the reporunner binary (built after `make dashboard`); CHROMIUM
// (default /usr/bin/chromium); ROUNDS (default 15).
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";

const dist = new URL("../dist/", import.meta.url).pathname;
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else files.push(path);
  }
};
walk(dist);
const raw = files.reduce((n, f) => n + statSync(f).size, 0);
const gzip = files.reduce((n, f) => n + gzipSync(readFileSync(f), { level: 9 }).length, 0);

const freePort = () =>
  new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
const port = await freePort();
const metricsPort = await freePort();
const data = mkdtempSync(join(tmpdir(), "reporunner-bench-"));
const args = ["serve", "--listen", `127.0.0.1:${port}`, "--metrics-listen", `127.0.0.1:${metricsPort}`];
const server = spawn(process.env.BINARY, [...args, "--data-dir", data], {
  env: { ...process.env, REPORUNNER_ENV_DETECTOR__REGISTRIES: "[]" },
  stdio: ["ignore", "ignore", "inherit"],
});
const base = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  try {
    if ((await fetch(`${base}/openapi.json`)).ok) break;
  } catch {
    if (i > 150) throw new Error("reporunner serve did not answer within 30 s");
  }
  await new Promise((r) => setTimeout(r, 200));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
});
const rounds = Number(process.env.ROUNDS ?? 15);
async function time(url, ready) {
  const samples = [];
  for (let i = 0; i < rounds + 2; i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const start = performance.now();
    await page.goto(url, { waitUntil: "load" });
    await ready(page);
    const ms = performance.now() - start;
    await context.close();
    if (i >= 2) samples.push(ms); // two warm-up rounds: the browser's own start-up
  }
  samples.sort((a, b) => a - b);
  return { p50: samples[Math.floor(samples.length / 2)], p90: samples[Math.floor(samples.length * 0.9)] };
}
try {
  const dashboard = await time(`${base}/login`, (page) => page.locator("#username").waitFor());
  const reference = await time(`${base}/openapi.json`, async () => {});
  const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
  console.log("| dashboard | value | reference | ratio |");
  console.log("|---|---|---|---|");
  console.log(`| bundle (dist/, ${files.length} files) | ${kib(raw)} raw, ${kib(gzip)} gzip | | |`);
  for (const q of ["p50", "p90"]) {
    console.log(
      `| first load to the login form, ${q} (${rounds} cold loads) | ${dashboard[q].toFixed(1)} ms | ` +
        `${reference[q].toFixed(1)} ms (/openapi.json) | ${(dashboard[q] / reference[q]).toFixed(2)}x |`,
    );
  }
} finally {
  await browser.close();
  server.kill("SIGTERM");
  rmSync(data, { recursive: true, force: true });
}

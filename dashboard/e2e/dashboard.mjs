// The dashboard end to end, in Debian's chromium driven by playwright-core:
// log in, start a run of a fixture, watch its steps reach RUNNING and the app's
// log line appear live, open the app, stop the run; a Free user sees their
// quota chart and vector search offered as unavailable with the tier that has
// it; the admin blocks that user, who then cannot log in. Any console error or
// Content-Security-Policy violation fails it.
//
// BASE, ADMIN_USER, ADMIN_PASSWORD, FREE_USER, FREE_PASSWORD, APP_PATH; CHROMIUM
// (default /usr/bin/chromium); SHOTS: a directory for run.png and usage.png.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env("BASE");
const SHOTS = process.env.SHOTS;
if (SHOTS) mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  // Root in a container has no user namespaces for chromium's own sandbox.
  args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
});
const problems = [];

// The refused login of the blocked user is an expected 403, which chromium logs.
const expected = { blocked: /Failed to load resource: .* 403/ };

async function open(name) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  pages.push([name, page]);
  page.on("console", (msg) => {
    if (msg.type() === "error" && !expected[name]?.test(msg.text())) problems.push(`${name}: console: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`${name}: page error: ${err.message}`));
  return { context, page };
}

async function login(page, username, password) {
  await page.goto(`${BASE}/`);
  await page.waitForURL(/\/login$/);
  // By keyboard only: the username has the focus, Tab moves on, Enter submits.
  const field = page.getByLabel("Username");
  await field.waitFor();
  await page.waitForFunction(() => document.activeElement?.id === "username");
  await page.keyboard.type(username);
  await page.keyboard.press("Tab");
  await page.keyboard.type(password);
  await page.keyboard.press("Enter");
}

const step = (text) => console.log(`- ${text}`);
const pages = [];

try {
  // Every control of the login page is labelled.
  const { page: admin } = await open("admin");
  await admin.goto(`${BASE}/login`);
  for (const input of await admin.locator("input, select, textarea").all()) {
    const labelled = await input.evaluate((el) => el.labels?.length > 0 || el.hasAttribute("aria-label"));
    assert.ok(labelled, `unlabelled control: ${await input.evaluate((el) => el.outerHTML)}`);
  }

  step("admin logs in");
  await login(admin, env("ADMIN_USER"), env("ADMIN_PASSWORD"));
  await admin.getByRole("heading", { name: "Your runs" }).waitFor();

  step("admin starts a run of the fixture");
  await admin.getByRole("link", { name: "New run" }).first().click();
  await admin.getByRole("radio", { name: /Path on the server/ }).check();
  await admin.getByLabel("Path", { exact: true }).fill(env("APP_PATH"));
  await admin.getByLabel("Goal").selectOption({ label: "Start and keep healthy" });
  await admin.getByRole("button", { name: "Start run" }).click();
  await admin.waitForURL(/\/runs\/[0-9a-f-]{36}$/);

  step("the steps reach RUNNING and the app's log line appears live");
  await admin.locator(".badge", { hasText: /^running$/ }).first().waitFor({ timeout: 300_000 });
  await admin.getByText(/start: finished/).waitFor();
  await admin.getByLabel("Source").selectOption({ value: "plugin-node-app" });
  const log = admin.getByRole("log", { name: "Logs of plugin-node-app" });
  await log.filter({ hasText: "listening on" }).waitFor({ timeout: 60_000 });
  await admin.locator("figure svg[role=img]").first().waitFor();
  if (SHOTS) await admin.screenshot({ path: join(SHOTS, "run.png"), fullPage: true });

  step("the app link opens the app");
  const [app] = await Promise.all([
    admin.context().waitForEvent("page"),
    admin.getByRole("link", { name: /Open the app/ }).first().click(),
  ]);
  await app.waitForLoadState();
  assert.match(await app.textContent("body"), /licence checked: /);
  await app.close();

  step("the run is stopped");
  await admin.getByRole("button", { name: "Stop run" }).click();
  await admin.locator(".badge", { hasText: /^stopped$/ }).first().waitFor({ timeout: 60_000 });
  await admin.getByText("Stop run").waitFor({ state: "detached" });

  step("a Free user sees their quota chart, and vector search unavailable with its tier");
  const free = await open("free");
  await login(free.page, env("FREE_USER"), env("FREE_PASSWORD"));
  await free.page.getByRole("heading", { name: "Your runs" }).waitFor();
  if (process.env.ARCHIVE_PATH) {
    step("the Free user starts an analysis of an uploaded archive");
    await free.page.getByRole("link", { name: "New run" }).first().click();
    await free.page.getByRole("radio", { name: /Upload an archive/ }).check();
    await free.page.getByLabel(/^Archive/).setInputFiles(process.env.ARCHIVE_PATH);
    await free.page.getByLabel("Goal").selectOption({ label: "Analyze only" });
    await free.page.getByRole("button", { name: "Start run" }).click();
    await free.page.waitForURL(/\/runs\/[0-9a-f-]{36}$/);
    await free.page.getByRole("heading", { name: /Run of uploaded web\.zip/ }).waitFor();
    await free.page.locator(".badge", { hasText: /^succeeded$/ }).first().waitFor({ timeout: 120_000 });
  }
  await free.page.getByRole("link", { name: "Usage" }).click();
  const chart = free.page.getByRole("img", { name: /Your quota in the last hour/ });
  await chart.waitFor();
  assert.match(await chart.getAttribute("aria-label"), /Metered requests: \d+ of \d+/);
  const missing = free.page.getByText(/Vector search is unavailable on your tier: it comes with the (Tester|Advanced|Premium) tier/);
  await missing.waitFor();
  if (SHOTS) await free.page.screenshot({ path: join(SHOTS, "usage.png"), fullPage: true });
  await free.page.getByRole("link", { name: "Search" }).click();
  const vector = free.page.locator("#mode option", { hasText: /^vector — unavailable: needs the \w+ tier$/ });
  await vector.waitFor({ state: "attached" });
  assert.equal(await vector.isDisabled(), true, "vector search must not be selectable on Free");
  await free.context.close();

  step("the admin blocks the Free user, who then cannot log in");
  await admin.getByRole("link", { name: "Admin" }).click();
  const row = admin.locator(`tr[data-user="${env("FREE_USER")}"]`);
  await row.getByRole("button", { name: /^Block/ }).click();
  await row.locator(".badge", { hasText: "blocked" }).waitFor();
  await admin.getByRole("cell", { name: "user.blocked" }).first().waitFor();
  const again = await open("blocked");
  await login(again.page, env("FREE_USER"), env("FREE_PASSWORD"));
  const alert = again.page.getByRole("alert");
  await alert.waitFor();
  assert.match(await alert.textContent(), /block/i);
  assert.match(again.page.url(), /\/login$/);
  await again.context.close();

  assert.deepEqual(problems, [], "console errors or CSP violations");
  console.log("dashboard e2e: all passed");
} catch (err) {
  // What each page showed when it failed, for the test's output.
  for (const [name, page] of pages) {
    if (page.isClosed()) continue;
    console.log(`--- ${name} at ${page.url()}:\n${(await page.textContent("body").catch(() => "")) ?? ""}`);
    if (SHOTS) await page.screenshot({ path: join(SHOTS, `failed-${name}.png`), fullPage: true }).catch(() => {});
  }
  throw err;
} finally {
  await browser.close();
}

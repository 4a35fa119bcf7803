// Drives the dashboard in Debian's headless chromium for tests/e2e/test_ui.py.
// Usage: node dashboard.mjs BASE_URL MASTER_KEY OUT_DIR. Prints READY once logged in, then reads one request id
// per line on stdin: waits for that request's row, opens its trace, and prints one JSON line of what it saw.
// After stdin closes it opens the usage tab, screenshots both views, prints a last JSON line and exits.
import { chromium } from "playwright-core";
import readline from "node:readline";

const [base, masterKey, outDir] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(base + "/ui");
  // Auth is on: the page must ask for the key first, refuse a wrong one, then accept the master key.
  await page.getByTestId("login-key").waitFor({ state: "visible", timeout: 10000 });
  await page.getByTestId("login-key").fill("wrong-key");
  await page.getByTestId("login-submit").click();
  await page.locator("#login-error", { hasText: "refused" }).waitFor({ timeout: 10000 });
  await page.getByTestId("login-key").fill(masterKey);
  await page.getByTestId("login-submit").click();
  await page.getByTestId("request-table").waitFor({ state: "visible", timeout: 10000 });
  say({ ready: true });

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const id = line.trim();
    if (!id) continue;
    if (id.startsWith("app:")) { // the application view: filter by it, read its pipeline drawing
      await page.locator('#filters input[name="application"]').fill(id.slice(4));
      await page.locator('#filters button[type="submit"]').click();
      await page.getByTestId("application-view").waitFor({ timeout: 10000 });
      const nodes = await page.locator('[data-testid="trace"] [data-testid="graph-node"] > .node').allInnerTexts();
      await page.locator('#filters input[name="application"]').fill("");
      await page.locator('#filters button[type="submit"]').click();
      say({ app: id.slice(4), nodes });
      continue;
    }
    const row = page.locator(`#request-table tbody tr[data-id="${id}"]`);
    await row.waitFor({ timeout: 15000 }); // arrives by auto-refresh, no reload
    await row.click();
    const trace = page.getByTestId("trace");
    await trace.locator("h2", { hasText: id }).waitFor({ timeout: 10000 });
    const spans = await trace.getByTestId("span").evaluateAll((els) => els.map((e) => e.dataset.name));
    await trace.locator('[data-testid="span"]').first().click();
    const attributes = await trace.getByTestId("span-attributes").innerText();
    const output = await trace.getByTestId("trace-output").innerText();
    const prompt = await trace.locator(".msg").allInnerTexts();
    const path = await trace.locator('[data-testid="trace-path"] li').allInnerTexts(); // branches and loops
    // the application's pipeline drawn with this request's path: each node's label and whether it ran
    const graph = await trace.locator('[data-testid="graph-node"]').evaluateAll((els) =>
      els.map((e) => [e.querySelector(".node").textContent, e.classList.contains("ran")]));
    say({ id, spans, attributes, output, prompt, path, graph });
  }
  await page.screenshot({ path: `${outDir}/ui-requests.png` });
  await page.getByTestId("tab-usage").click();
  await page.locator("#chart-requests svg rect").first().waitFor({ timeout: 10000 });
  const totals = await page.getByTestId("totals").innerText();
  const bars = await page.locator("#chart-requests svg rect").count();
  await page.screenshot({ path: `${outDir}/ui-usage.png`, fullPage: true });
  say({ done: true, totals, bars, consoleErrors });
} catch (e) {
  say({ error: String(e && e.stack ? e.stack : e) });
  process.exitCode = 1;
} finally {
  await browser.close();
}

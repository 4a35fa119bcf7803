// Drives the dashboard's Evals tab for tests/e2e/test_eval.py.
// Usage: node evals.mjs BASE_URL MASTER_KEY OUT_DIR RUN_A RUN_B REQUEST_ID. Opens the request's trace and reads its
// feedback, then picks the two runs, waits for the per-item diff table, screenshots both views, and prints one JSON
// line of what it saw.
import { chromium } from "playwright-core";

const [base, masterKey, outDir, runA, runB, requestId] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(base + "/ui");
  await page.getByTestId("login-key").fill(masterKey);
  await page.getByTestId("login-submit").click();
  await page.getByTestId("request-table").waitFor({ state: "visible", timeout: 10000 });
  const row = page.locator(`#request-table tbody tr[data-id="${requestId}"]`);
  await row.waitFor({ timeout: 15000 });
  await row.click();
  await page.getByTestId("trace").locator("h2", { hasText: requestId }).waitFor({ timeout: 10000 });
  const feedback = await page.getByTestId("feedback-row").allInnerTexts();
  const conversation = await page.getByTestId("feedback").locator("p").first().innerText();
  await page.screenshot({ path: `${outDir}/ui-feedback.png` });
  await page.getByTestId("tab-evals").click();
  await page.locator(`#eval-runs tr[data-run="${runB}"]`).waitFor({ timeout: 10000 });
  await page.getByTestId("eval-a").selectOption(runA);
  await page.getByTestId("eval-b").selectOption(runB);
  await page.locator("#eval-compare h3", { hasText: `Run A ${runA} vs run B ${runB}` }).waitFor({ timeout: 10000 });
  await page.getByTestId("eval-item-row").first().waitFor({ timeout: 10000 });
  const rows = await page.getByTestId("eval-item-row").evaluateAll((els) => els.map((e) => ({
    item: e.dataset.item, variant: e.dataset.variant, delta: e.dataset.delta,
    a: e.children[5].innerText, b: e.children[6].innerText })));
  const summary = await page.getByTestId("eval-summary-row").evaluateAll((els) => els.map((e) => [...e.children].map((c) => c.innerText)));
  await page.screenshot({ path: `${outDir}/ui-evals.png`, fullPage: true });
  process.stdout.write(JSON.stringify({ rows, summary, feedback, conversation, consoleErrors }) + "\n");
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }) + "\n");
  process.exitCode = 1;
} finally {
  await browser.close();
}

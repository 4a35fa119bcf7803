// Drives the dashboard's Applications tab for tests/e2e/test_ui.py.
// Usage: node applications.mjs BASE_URL MASTER_KEY OUT_DIR APP. Opens the tab, reads the application's row, opens
// it (pipeline graph and feedback by version), screenshots, follows "Show its requests", and prints one JSON line.
import { chromium } from "playwright-core";

const [base, masterKey, outDir, app] = process.argv.slice(2);
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
  await page.getByTestId("tab-applications").click();
  const row = page.locator(`#app-table tbody tr[data-app="${app}"]`);
  await row.waitFor({ timeout: 10000 });
  const cells = await row.locator("td").allInnerTexts();
  await row.click();
  await page.getByTestId("app-name").filter({ hasText: app }).waitFor({ timeout: 10000 });
  const nodes = await page.getByTestId("app-detail").locator(".node").allInnerTexts();
  const feedback = await page.getByTestId("app-feedback-row").evaluateAll((els) => els.map((e) => [...e.children].map((c) => c.innerText)));
  await page.screenshot({ path: `${outDir}/ui-applications.png`, fullPage: true });
  await page.getByTestId("app-requests-link").click();
  await page.getByTestId("application-view").filter({ hasText: app }).waitFor({ timeout: 10000 });
  const requestsVisible = await page.locator("#requests").isVisible();
  process.stdout.write(JSON.stringify({ cells, nodes, feedback, requestsVisible, consoleErrors }) + "\n");
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }) + "\n");
} finally {
  await browser.close();
}

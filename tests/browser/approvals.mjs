// Drives the approvals page in Debian's headless chromium for tests/e2e/test_approvals_ui.py.
// Usage: node approvals.mjs BASE_URL MASTER_KEY OUT_DIR APPROVE_ID DENY_ID. Edits and approves the first action,
// denies the second, and prints one JSON line of what the page showed.
import { chromium } from "playwright-core";

const [base, masterKey, outDir, approveId, denyId] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(base + "/ui/approvals.html");
  await page.getByTestId("login-key").waitFor({ state: "visible", timeout: 10000 });
  await page.getByTestId("login-key").fill(masterKey);
  await page.getByTestId("login-submit").click();
  const pendingRows = page.locator("#approval-table tbody tr");
  await page.locator(`#approval-table tbody tr[data-id="${approveId}"]`).waitFor({ timeout: 10000 });
  const listed = await pendingRows.evaluateAll((els) => els.map((e) => e.dataset.id));

  await page.locator(`#approval-table tbody tr[data-id="${approveId}"]`).click();
  const detail = page.getByTestId("approval-detail");
  await detail.locator("h2", { hasText: approveId }).waitFor({ timeout: 10000 });
  const argumentsShown = await page.getByTestId("approval-arguments").inputValue();
  const conversation = await detail.locator(".msg").allInnerTexts();
  await page.getByTestId("approval-arguments").fill('{"order_id": "EDITED"}');
  await page.getByTestId("approve").click();
  await page.getByTestId("detail-status").filter({ hasText: "executed" }).waitFor({ timeout: 10000 });
  const result = await page.getByTestId("approval-result").innerText();
  await page.screenshot({ path: `${outDir}/ui-approvals.png` });

  await page.locator(`#approval-table tbody tr[data-id="${denyId}"]`).click();
  await detail.locator("h2", { hasText: denyId }).waitFor({ timeout: 10000 });
  await page.getByTestId("deny-reason").fill("wrong customer");
  await page.getByTestId("deny").click();
  await page.getByTestId("detail-status").filter({ hasText: "denied" }).waitFor({ timeout: 10000 });
  await page.getByTestId("approval-status").selectOption("");
  await page.locator(`#approval-table tbody tr[data-id="${denyId}"]`).waitFor({ timeout: 10000 });
  const history = await pendingRows.evaluateAll((els) =>
    els.map((e) => [e.dataset.id, e.querySelector('[data-testid="row-status"]').textContent]));
  say({ listed, argumentsShown, conversation, result, history, consoleErrors });
} catch (e) {
  say({ error: String(e && e.stack ? e.stack : e) });
  process.exitCode = 1;
} finally {
  await browser.close();
}

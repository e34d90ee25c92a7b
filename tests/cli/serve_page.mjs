// Headless Chromium (puppeteer-core) on the chat page of `trustmoe serve`:
// load /, send a message, wait for the streamed reply, save a screenshot.
// Usage: node serve_page.mjs PORT EXPECTED_REPLY SCREENSHOT (PUPPETEER_MODULE: the package)
const [port, expected, shot] = process.argv.slice(2);
const puppeteer = (await import(process.env.PUPPETEER_MODULE)).default;
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let pass = 0, fail = 0;
const check = (name, cond, detail) => {
  if (cond) { pass++; console.log(`ok   chat page: ${name}`); }
  else { fail++; console.log(`FAIL chat page: ${name}: ${JSON.stringify(detail)}`); }
};
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 900, height: 700 });
  await page.goto(`http://127.0.0.1:${port}/`, { waitUntil: "networkidle0" });
  check("title", (await page.title()) === "trustmoe", await page.title());
  await page.waitForFunction(() => document.getElementById("meta").textContent.includes("model"), { timeout: 20000 });
  await page.type("#t", "Hello");
  await page.click("#send");
  await page.waitForFunction(
    (want) => { const m = document.querySelectorAll(".msg.assistant"); return m.length && m[m.length - 1].textContent === want; },
    { timeout: 60000 }, expected);
  const got = await page.$$eval(".msg.assistant", (els) => els.map((e) => e.textContent));
  check("the streamed reply is the greedy chat reply", got.length === 1 && got[0] === expected, got);
  await page.screenshot({ path: shot });
  check("screenshot saved", true);
} catch (e) {
  check("page interaction", false, String(e));
} finally {
  await browser.close();
}
console.log(`${pass} passed, ${fail} failed`);
process.exit(fail ? 1 : 0);

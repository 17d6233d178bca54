// Headless-Chromium end-to-end suite: a new business owner signs up, connects a (mock) Twilio
// account, receives a text live over SSE, replies, checks the phone layout and signs out; a
// customer texts the demo number from the phone simulator.
//
// Env: SWITCHBOARD_BIN (default target/debug/switchboard, relative to the repo root).
// Artifacts: target/browser-artifacts/{dashboard,settings,inbox,dashboard-phone,failure}.png
// and server.log.

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { accessSync, constants, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const artifacts = path.join(root, "target", "browser-artifacts");
const bin = path.resolve(root, process.env.SWITCHBOARD_BIN || "target/debug/switchboard");
const CHROMIUM = "/usr/bin/chromium";

const hex = (bytes) => randomBytes(bytes).toString("hex");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Test state and clean-up

let server = null; // the app's child process
let serverExited = null; // Promise resolved on exit
let serverLog = null;
let mock = null; // the mock Twilio http.Server
let browser = null;
let page = null;
let dataDir = null;
const problems = []; // console messages / page errors that fail the run
const state = { appUrl: "", sid: "AC" + hex(16), token: hex(16), number: "+15125550199", customer: "+15555550123" };

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  browser = null;
  if (server && server.exitCode === null && server.signalCode === null) {
    server.kill("SIGTERM");
    const done = await Promise.race([serverExited.then(() => true), sleep(5000).then(() => false)]);
    if (!done) {
      server.kill("SIGKILL");
      await serverExited;
    }
  }
  server = null;
  if (serverLog) await new Promise((r) => serverLog.end(r));
  serverLog = null;
  if (mock) {
    mock.closeAllConnections?.();
    await new Promise((r) => mock.close(() => r()));
  }
  mock = null;
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  dataDir = null;
}

function logTail(lines = 40) {
  try {
    const text = readFileSync(path.join(artifacts, "server.log"), "utf8").trimEnd();
    return text ? text.split("\n").slice(-lines).join("\n") : "(empty)";
  } catch {
    return "(no server.log)";
  }
}

async function fail(step, err) {
  const message = err && err.message ? err.message : String(err);
  console.log(`FAIL  ${step}`);
  console.log(`      ${message.split("\n").join("\n      ")}`);
  if (page) {
    console.log(`      page URL: ${page.url()}`);
    await page
      .screenshot({ path: path.join(artifacts, "failure.png"), fullPage: true })
      .then(() => console.log(`      screenshot: target/browser-artifacts/failure.png`))
      .catch((e) => console.log(`      (no failure screenshot: ${e.message})`));
  }
  if (problems.length) console.log(`      console/page errors:\n        ${problems.join("\n        ")}`);
  await cleanup();
  console.log(`--- server.log (last lines) ---\n${logTail()}\n---`);
  console.log(`browser suite: FAILED at "${step}"`);
  process.exit(1);
}

let current = "setup";
async function step(name, fn) {
  current = name;
  const t0 = Date.now();
  try {
    await fn();
    checkProblems();
  } catch (e) {
    await fail(name, e);
  }
  console.log(`PASS  ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

function checkProblems() {
  const bad = problems.filter((p) => /Content Security Policy/i.test(p) || p.startsWith("pageerror:"));
  if (bad.length) throw new Error(`console/page errors:\n  ${bad.join("\n  ")}`);
}

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => fail(current, new Error(`interrupted by ${sig}`)));
}
process.on("unhandledRejection", (e) => fail(current, e));
// Nothing here should take long; a hang fails the run instead of stalling CI.
setTimeout(() => fail(current, new Error("suite timed out after 180 s")), 180_000).unref();

// ---------------------------------------------------------------------------------------------
// Helpers

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(100);
  }
}

/// Twilio's X-Twilio-Signature: base64(HMAC-SHA1(token, url + sorted key+value pairs)).
function twilioSignature(token, url, params) {
  const data = Object.keys(params)
    .sort()
    .reduce((acc, k) => acc + k + params[k], url);
  return createHmac("sha1", token).update(data, "utf8").digest("base64");
}

async function bodyText() {
  return page.locator("body").innerText();
}

async function expectText(text, where = "body", timeout = 10_000) {
  try {
    await page.locator(where).getByText(text, { exact: false }).first().waitFor({ state: "visible", timeout });
  } catch {
    const shown = (await page.locator(where).first().innerText().catch(() => "(not found)")).slice(0, 800);
    throw new Error(`expected ${where} of ${page.url()} to show ${JSON.stringify(text)}; it shows:\n${shown}`);
  }
}

/// Clicks `button` and waits for the navigation it causes to land on a URL matching `to`.
async function submitAndLand(button, to, what) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().isNavigationRequest() && r.request().method() === "POST", { timeout: 15_000 }),
    button.click(),
  ]);
  try {
    await page.waitForURL(to, { timeout: 15_000, waitUntil: "load" });
  } catch {
    throw new Error(
      `${what}: expected to land on ${to}, got ${page.url()} (POST ${response.url()} answered ${response.status()})\n` +
        (await bodyText()).slice(0, 800),
    );
  }
  return response;
}

async function goto(url) {
  const r = await page.goto(url, { waitUntil: "load" });
  return r;
}

// ---------------------------------------------------------------------------------------------
// Mock of Twilio's REST API

const twilioRequests = []; // { method, path, accountSid, auth, form }

function startMock() {
  return new Promise((resolve) => {
    mock = createServer((req, res) => {
      let raw = "";
      req.setEncoding("utf8");
      req.on("data", (c) => (raw += c));
      req.on("end", () => {
        const url = new URL(req.url, "http://mock");
        const json = (status, body) => {
          res.writeHead(status, { "content-type": "application/json" });
          res.end(JSON.stringify(body));
        };
        let m;
        if (req.method === "POST" && (m = url.pathname.match(/^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/))) {
          const form = Object.fromEntries(new URLSearchParams(raw));
          twilioRequests.push({ method: "POST", path: url.pathname, accountSid: m[1], auth: req.headers.authorization, form });
          return json(201, { sid: "SM" + hex(16), status: "queued" });
        }
        if (req.method === "GET" && (m = url.pathname.match(/^\/2010-04-01\/Accounts\/([^/]+)\/IncomingPhoneNumbers\.json$/))) {
          // The account holds the suite's number (asked before a number is added).
          const asked = url.searchParams.get("PhoneNumber");
          twilioRequests.push({ method: "GET", path: url.pathname, accountSid: m[1], auth: req.headers.authorization, form: null, asked });
          const held = asked === state.number ? [{ phone_number: state.number }] : [];
          return json(200, { incoming_phone_numbers: held });
        }
        if (req.method === "GET" && (m = url.pathname.match(/^\/2010-04-01\/Accounts\/([^/]+)\.json$/))) {
          twilioRequests.push({ method: "GET", path: url.pathname, accountSid: m[1], auth: req.headers.authorization, form: null });
          return json(200, { friendly_name: "Browser Test", status: "active" });
        }
        twilioRequests.push({ method: req.method, path: url.pathname, unmatched: true });
        json(404, { code: 20404, message: "The requested resource was not found", status: 404 });
      });
    });
    mock.listen(0, "127.0.0.1", () => resolve(mock.address().port));
  });
}

function sentMessages() {
  return twilioRequests.filter((r) => r.method === "POST" && r.form);
}

function describeRequests() {
  return twilioRequests.length
    ? twilioRequests.map((r) => `${r.method} ${r.path}${r.form ? " " + JSON.stringify(r.form) : ""}`).join("\n  ")
    : "(none)";
}

// ---------------------------------------------------------------------------------------------
// The run

console.log(`browser suite: ${bin}`);
await step("setup: mock Twilio, app server, Chromium", async () => {
  mkdirSync(artifacts, { recursive: true });
  for (const f of ["dashboard.png", "settings.png", "inbox.png", "dashboard-phone.png", "failure.png", "server.log"]) {
    rmSync(path.join(artifacts, f), { force: true });
  }
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(`SWITCHBOARD_BIN: ${bin} is missing or not executable (build it first: cargo build)`);
  }
  assert(existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install -y chromium)`);

  const mockPort = await startMock();
  const port = await freePort();
  dataDir = mkdtempSync(path.join(tmpdir(), "sb-browser-"));
  state.appUrl = `http://127.0.0.1:${port}`;
  serverLog = createWriteStream(path.join(artifacts, "server.log"));
  server = spawn(bin, ["serve"], {
    cwd: dataDir, // no stray switchboard.toml is picked up
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      BIND: `127.0.0.1:${port}`,
      APP_URL: state.appUrl,
      DATABASE_URL: `sqlite://${dataDir}/sb.db`,
      SECRET_KEY: hex(32),
      // The demo tenant's number sends through the simulator (step g); the owner who signs
      // up is another business.
      DEMO_SEED: "true",
      TWILIO_API_BASE: `http://127.0.0.1:${mockPort}`,
      RUST_LOG: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  serverExited = new Promise((r) => server.once("exit", r));
  server.stdout.pipe(serverLog, { end: false });
  server.stderr.pipe(serverLog, { end: false });
  server.once("error", (e) => serverLog?.write(`spawn error: ${e.message}\n`));

  await waitFor("GET /health to answer 200", 30_000, async () => {
    if (server.exitCode !== null || server.signalCode !== null) {
      throw new Error(`the server exited (code ${server.exitCode}, signal ${server.signalCode}) before /health answered`);
    }
    try {
      const r = await fetch(`${state.appUrl}/health`);
      return r.status === 200;
    } catch {
      return false;
    }
  });

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, baseURL: state.appUrl });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on("console", (msg) => {
    const at = msg.location()?.url || page.url();
    const line = `console.${msg.type()}: ${msg.text()} (${at}, on ${page.url()})`;
    if (msg.type() === "error" || /Content Security Policy/i.test(msg.text())) problems.push(line);
  });
  page.on("pageerror", (err) => problems.push(`pageerror: ${err.message} (${page.url()})`));
});

await step("a. sign-up and onboarding -> dashboard", async () => {
  const email = `owner+${hex(4)}@example.com`;
  await goto("/signup");
  await page.fill("input[name=email]", email);
  await page.fill("input[name=password]", `pw-${hex(8)}`);
  await submitAndLand(page.locator('form[action="/signup"] button[type=submit]'), "**/onboarding", "sign-up");

  await page.fill("input[name=business_name]", "Browser Plumbing");
  await page.fill("input[name=time_zone]", "America/Chicago");
  await page.fill("input[name=notify_phone]", "+15125550142");
  await submitAndLand(
    page.locator('form[action="/onboarding"] button[type=submit]'),
    (u) => u.pathname === "/" && u.search === "",
    "onboarding",
  );
  await expectText("Browser Plumbing");
  await expectText("Active conversations");
  await page.screenshot({ path: path.join(artifacts, "dashboard.png"), fullPage: true });
});

await step("b. settings: connect Twilio, add a number, test the connection", async () => {
  await goto("/settings");
  const twilio = page.locator('form[action="/settings/twilio"]');
  await twilio.locator("input[name=account_sid]").fill(state.sid);
  await twilio.locator("input[name=auth_token]").fill(state.token);
  await submitAndLand(
    twilio.locator("button[type=submit]"),
    (u) => u.pathname === "/settings" && u.searchParams.get("done") === "twilio",
    "save Twilio account",
  );
  await expectText("Twilio account connected.");

  const numbers = page.locator('form[action="/settings/numbers"]');
  await numbers.locator("input[name=e164]").fill(state.number);
  await submitAndLand(numbers.locator("button[type=submit]"), (u) => u.pathname === "/settings", "add number");
  await expectText(state.number, "#twilio table");

  await submitAndLand(
    page.locator('form[action="/settings/twilio/test"] button[type=submit]'),
    "**/settings/twilio/test",
    "test connection",
  );
  const notice = page.locator("p.notice");
  const text = await notice
    .first()
    .innerText({ timeout: 5_000 })
    .catch(async () => `(no notice; page shows:\n${(await bodyText()).slice(0, 600)})`);
  assert(text.startsWith("Connected to Twilio"), `test connection: expected a notice starting "Connected to Twilio", got: ${text}`);
  assert(text.includes("Browser Test"), `test connection: expected the mock's friendly name in: ${text}`);
  const held = twilioRequests.find((r) => r.path.endsWith("/IncomingPhoneNumbers.json"));
  assert(
    held && held.accountSid === state.sid && held.asked === state.number,
    `mock Twilio: expected GET /Accounts/${state.sid}/IncomingPhoneNumbers.json?PhoneNumber=${state.number}; got:\n  ${describeRequests()}`,
  );
  const get = twilioRequests.find((r) => r.method === "GET" && r.path === `/2010-04-01/Accounts/${state.sid}.json`);
  assert(get && get.accountSid === state.sid, `mock Twilio: expected GET /Accounts/${state.sid}.json; got:\n  ${describeRequests()}`);
  await page.screenshot({ path: path.join(artifacts, "settings.png"), fullPage: true });
});

await step("c. inbound text appears live in the inbox; thread shows the bot's reply", async () => {
  // The page's EventSource must be connected before the text arrives.
  const stream = page.waitForResponse((r) => new URL(r.url()).pathname === "/events", { timeout: 10_000 });
  await goto("/conversations");
  await page.locator("#conversation-list").waitFor();
  const sse = await stream.catch(() => null);
  assert(sse, "the inbox did not open its event stream (GET /events) within 10 s");
  assert(sse.status() === 200, `GET /events answered ${sse.status()}, expected 200`);
  await sleep(200); // the server subscribes as the stream starts

  const url = `${state.appUrl}/webhooks/twilio/sms`;
  const params = {
    MessageSid: "SM" + hex(16),
    AccountSid: state.sid,
    From: state.customer,
    To: state.number,
    Body: "my water heater is leaking",
    NumMedia: "0",
  };
  const r = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      "X-Twilio-Signature": twilioSignature(state.token, url, params),
    },
    body: new URLSearchParams(params).toString(),
  });
  const answer = await r.text();
  assert(r.status === 200, `POST ${url}: expected 200, got ${r.status}: ${answer.slice(0, 300)}`);

  const list = page.locator("#conversation-list");
  try {
    await list.getByText(state.customer).first().waitFor({ timeout: 10_000 });
  } catch {
    throw new Error(
      `live update: #conversation-list did not show ${state.customer} within 10 s without a reload; it shows:\n` +
        (await list.innerText().catch(() => "(no #conversation-list)")),
    );
  }
  await Promise.all([
    page.waitForURL((u) => u.pathname === "/conversations" && u.searchParams.has("c")),
    list.locator("a", { hasText: state.customer }).first().click(),
  ]);
  await expectText("my water heater is leaking", "#messages");

  const bot = await waitFor("mock Twilio to receive the bot's reply (Body contains \"Thanks for reaching out\")", 10_000, async () =>
    sentMessages().find((m) => (m.form.Body || "").includes("Thanks for reaching out")),
  ).catch((e) => {
    throw new Error(`${e.message}; mock received:\n  ${describeRequests()}`);
  });
  assert(bot.form.To === state.customer, `bot reply: To=${bot.form.To}, expected ${state.customer}`);
  assert(bot.form.From === state.number, `bot reply: From=${bot.form.From}, expected ${state.number}`);
  assert(bot.accountSid === state.sid, `bot reply: sent via account ${bot.accountSid}, expected the tenant's ${state.sid}`);
  await expectText("Thanks for reaching out", "#messages");
});

await step("d. reply from the compose form reaches Twilio and the thread", async () => {
  const text = "A technician is on the way";
  const before = sentMessages().length;
  await page.locator("form.compose textarea[name=body]").fill(text);
  await page.locator("form.compose button", { hasText: "Send" }).click();
  const sent = await waitFor(`mock Twilio to receive Body=${JSON.stringify(text)}`, 10_000, async () =>
    sentMessages().slice(before).find((m) => m.form.Body === text),
  ).catch((e) => {
    throw new Error(`${e.message}; mock received:\n  ${describeRequests()}`);
  });
  assert(sent.form.To === state.customer, `manual reply: To=${sent.form.To}, expected ${state.customer}`);
  assert(sent.form.From === state.number, `manual reply: From=${sent.form.From}, expected ${state.number}`);
  await expectText(text, "#messages");
  await page.screenshot({ path: path.join(artifacts, "inbox.png"), fullPage: true });
});

await step("e. phone viewport (390x844): dashboard without horizontal scroll", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await goto("/");
  await expectText("Active conversations");
  await page.screenshot({ path: path.join(artifacts, "dashboard-phone.png"), fullPage: true });
  const { scrollWidth, overflowing } = await page.evaluate(() => {
    const limit = 390 + 1;
    const name = (el) =>
      el.tagName.toLowerCase() +
      (el.id ? "#" + el.id : "") +
      [...el.classList].map((c) => "." + c).join("");
    const pathOf = (el) => {
      const parts = [];
      for (let e = el; e && e !== document.body; e = e.parentElement) parts.unshift(name(e));
      return parts.join(" > ");
    };
    const out = [];
    for (const el of document.body.querySelectorAll("*")) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      if (r.right > limit) {
        // Report the outermost overflowing elements only, not every descendant.
        const parent = el.parentElement;
        const pr = parent && parent !== document.body ? parent.getBoundingClientRect() : null;
        if (pr && pr.right > limit) continue;
        out.push(`${pathOf(el)} (left ${Math.round(r.left)}, right ${Math.round(r.right)}, width ${Math.round(r.width)})`);
      }
    }
    return { scrollWidth: document.documentElement.scrollWidth, overflowing: out };
  });
  assert(
    scrollWidth <= 391,
    `horizontal scroll on / at 390 px: document.documentElement.scrollWidth = ${scrollWidth} (expected <= 391).\n` +
      `Outermost elements extending past 391 px:\n  ${overflowing.join("\n  ") || "(none found)"}`,
  );
});

await step("f. sign out -> /login; / then redirects to /login", async () => {
  await page.setViewportSize({ width: 1280, height: 800 });
  await goto("/");
  await submitAndLand(page.getByRole("button", { name: "Sign out" }), (u) => u.pathname === "/login", "sign out");
  await goto("/");
  assert(new URL(page.url()).pathname === "/login", `GET / after sign-out: expected a redirect to /login, landed on ${page.url()}`);
});

await step("g. simulator: a phone typed with spaces, Enter pressed twice while sending -> one text, the bot's reply live", async () => {
  await goto("/simulator");
  await page.locator("form.handset-pick input[name=phone]").fill("+1 (555) 555-0177");
  await Promise.all([page.waitForURL(/[?&]phone=/), page.getByRole("button", { name: "Open" }).click()]);
  // The text takes half a second to reach the server: the second Enter comes while it is on
  // its way.
  await page.route("**/simulator/send", async (route) => {
    await sleep(500);
    await route.continue();
  });
  const box = page.locator("form.compose textarea[name=body]");
  await box.fill("my water heater is leaking");
  await box.press("Enter");
  await box.press("Enter");
  await expectText("Thanks for reaching out", "#handset");
  await page.unroute("**/simulator/send");
  await sleep(1000); // a second text would have been stored by now
  await page.reload({ waitUntil: "load" });
  const texts = await page.locator("#handset .bubble.out").allInnerTexts();
  assert(
    texts.length === 1 && texts[0].includes("my water heater is leaking"),
    `the handset of +15555550177 should hold the customer's one text, it holds: ${JSON.stringify(texts)}`,
  );
});

await step("h. no CSP violations or uncaught exceptions", async () => {
  checkProblems();
  // Other console errors (a failed resource load, say) do not fail the run but are shown.
  for (const p of problems) console.log(`      note: ${p}`);
});

await cleanup();
console.log("browser suite: all steps passed");
process.exit(0);

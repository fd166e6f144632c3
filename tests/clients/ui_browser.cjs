// Drives Debian's chromium (through playwright-core) over todo-mcp's /ui page as a user
// would, for tests/external/ui.rs: signs in with a token, walks the tasks (with "load more"), opens
// a conversation's timeline and its agent state versions, tries another user's
// conversation, checks the page's Content-Security-Policy is in force, and signs out.
//
// Input: one JSON argument (see `input` below). Output: one JSON line on stdout, the
// report: {failures: [...], checks: [...], console: [...], csp_violations: [...],
// expected_404s: [...], screenshots: [...], api_responses: N}. The Rust test asserts on it; this script exits 0
// whenever it could write the report, 1 when it could not even start.
//
// A .cjs script: NODE_PATH (where the test harness installed playwright-core) applies to
// require(), not to ESM imports.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const input = JSON.parse(process.argv[2]);
// input: {
//   base_url, chromium, screenshot_dir, token, user,
//   other_user_markers: [text that only the other user's data contains],
//   other_conversation_id: one of the other user's conversations,
//   tasks: {total, page, titles: [...], labeled: {title, labels, priority, due_text}, completed_title},
//   conversation: {title, texts: [...], tool_call: {name, id}, records: {ok, failed},
//                  states: [{version, text}]}
// }

const WAIT_MS = 15_000;
const report = {
  failures: [],
  checks: [],
  console: [],
  csp_violations: [],
  expected_404s: [],
  screenshots: [],
  api_responses: 0,
};

function check(ok, what) {
  if (ok) report.checks.push(what);
  else report.failures.push(what);
}

function log(message) {
  process.stderr.write(`ui_browser: ${message}\n`);
}

/** The other user's markers found in `text` (none, if the page is right). */
function leaks(text) {
  return input.other_user_markers.filter((marker) => text.includes(marker));
}

async function checkNoLeak(page, where) {
  const text = await page.evaluate(() => document.documentElement.outerHTML);
  const found = leaks(text);
  check(found.length === 0, `${where}: no other user's data on the page${found.length ? ` (found ${found.join(', ')})` : ''}`);
}

async function screenshot(page, name) {
  const file = path.join(input.screenshot_dir, name);
  await page.screenshot({ path: file, fullPage: true });
  report.screenshots.push(file);
  log(`screenshot ${file}`);
}

async function textOf(locator) {
  return (await locator.innerText()).replace(/\s+/g, ' ').trim();
}

async function run(page) {
  // ---- Sign in ----
  await page.goto(`${input.base_url}/ui`);
  await page.locator('#sign-in').waitFor({ state: 'visible', timeout: WAIT_MS });
  check(await page.locator('#nav').isHidden(), 'signed out: no navigation before signing in');
  await page.locator('#token').fill(input.token);
  await page.locator('#sign-in-button').click();
  await page.locator('#who').waitFor({ state: 'visible', timeout: WAIT_MS });
  check((await textOf(page.locator('#who-user'))) === input.user, `signed in as ${input.user}`);

  // ---- Tasks, a page at a time ----
  const rows = page.locator('#task-rows tr');
  await rows.nth(input.tasks.page - 1).waitFor({ timeout: WAIT_MS });
  check((await rows.count()) === input.tasks.page, `the first page shows ${input.tasks.page} tasks`);
  const more = page.locator('#tasks-more');
  check(await more.isVisible(), '"Load more tasks" is offered');
  await more.click();
  await rows.nth(input.tasks.total - 1).waitFor({ timeout: WAIT_MS });
  check((await rows.count()) === input.tasks.total, `after "load more": all ${input.tasks.total} tasks`);
  await more.waitFor({ state: 'hidden', timeout: WAIT_MS });
  check(true, '"Load more tasks" is gone after the last page');
  const tableText = await textOf(page.locator('#task-rows'));
  for (const title of input.tasks.titles) check(tableText.includes(title), `task "${title}" is listed`);

  const labeled = input.tasks.labeled;
  const labeledRow = rows.filter({ hasText: labeled.title });
  check((await labeledRow.count()) === 1, `one row for "${labeled.title}"`);
  const labeledCells = await labeledRow.locator('td').allInnerTexts();
  const [, status, due, priority, labels] = labeledCells.map((t) => t.trim());
  check(status === 'pending', `"${labeled.title}" is pending (${status})`);
  check(due.includes(labeled.due_text), `"${labeled.title}" is due ${labeled.due_text} (${due})`);
  check(priority === labeled.priority, `"${labeled.title}" has priority ${labeled.priority} (${priority})`);
  for (const label of labeled.labels) check(labels.includes(label), `"${labeled.title}" has label ${label}`);
  const doneRow = rows.filter({ hasText: input.tasks.completed_title });
  check((await textOf(doneRow.locator('td').nth(1))) === 'done', `"${input.tasks.completed_title}" shows done`);
  await checkNoLeak(page, 'tasks');
  await screenshot(page, 'ui-tasks.png');

  // ---- A conversation's timeline and agent state ----
  await page.locator('#nav a[data-view="conversations"]').click();
  const link = page.locator('#conversation-list a', { hasText: input.conversation.title });
  await link.waitFor({ timeout: WAIT_MS });
  await link.click();
  const timeline = page.locator('#timeline');
  const conversation = input.conversation;
  await page.locator('#timeline li').first().waitFor({ timeout: WAIT_MS });
  await page.locator('#state-versions details').first().waitFor({ timeout: WAIT_MS });
  check((await textOf(page.locator('#conversation-title'))) === conversation.title, 'the conversation\'s title heads it');
  const timelineText = await textOf(timeline);
  for (const text of conversation.texts) check(timelineText.includes(text), `the timeline shows "${text}"`);

  const call = timeline.locator('.message.role-assistant .tool-call', { hasText: conversation.tool_call.name });
  check((await call.count()) >= 1, `an assistant message shows its tool call ${conversation.tool_call.name}`);
  check((await textOf(call.first())).includes(conversation.tool_call.id), `the tool call shows its id ${conversation.tool_call.id}`);
  const answer = timeline.locator('.message.role-tool', { hasText: conversation.tool_call.id });
  check((await answer.count()) === 1, 'the tool result names the call it answers');

  // Markup in a message is text: shown as written, and none of it runs.
  check((await timeline.locator('img, script').count()) === 0, 'markup in a message made no element');
  check((await page.evaluate(() => window.__pwned)) === undefined, 'markup in a message ran nothing');

  const okRecords = timeline.locator('.record.record-ok');
  const failedRecords = timeline.locator('.record.record-failed');
  check((await okRecords.count()) === conversation.records.ok, `${conversation.records.ok} successful call records (${await okRecords.count()})`);
  check((await failedRecords.count()) === conversation.records.failed, `${conversation.records.failed} failed call record(s) (${await failedRecords.count()})`);
  if ((await okRecords.count()) > 0) {
    const first = await textOf(okRecords.first().locator('.item-head'));
    check(/\b\d+(\.\d+)? (ms|s)\b/.test(first), `a call record shows its duration (${first})`);
  }
  if ((await failedRecords.count()) > 0) {
    const failed = await textOf(failedRecords.first());
    check(failed.includes('failed: invalid_argument'), `a failed call record shows its kind (${failed.slice(0, 120)})`);
  }
  // The order is the order things happened: ids increase down the timeline.
  const ids = (await timeline.locator(':scope > li').evaluateAll(
    (items) => items.map((item) => Number(item.dataset.messageId))));
  check(ids.every((id, i) => i === 0 || ids[i - 1] < id), `the timeline is in order (${ids.join(', ')})`);

  const versions = page.locator('#state-versions details');
  check((await versions.count()) === conversation.states.length, `${conversation.states.length} agent state versions`);
  const versionNumbers = await versions.evaluateAll((items) => items.map((item) => Number(item.dataset.version)));
  check(JSON.stringify(versionNumbers) === JSON.stringify(conversation.states.map((s) => s.version)),
    `versions newest first (${versionNumbers.join(', ')})`);
  // The latest opens by itself; the others load when opened.
  for (const [index, saved] of conversation.states.entries()) {
    const version = versions.nth(index);
    if (!(await version.evaluate((details) => details.open))) await version.locator('summary').click();
    const body = version.locator('pre');
    await body.filter({ hasText: saved.text }).waitFor({ timeout: WAIT_MS });
    check(true, `version ${saved.version} shows its state (${saved.text})`);
  }
  // One record opened, to show what a record holds.
  await okRecords.first().locator('summary').click();
  await checkNoLeak(page, 'conversation');
  await screenshot(page, 'ui-conversation.png');

  // ---- Another user's conversation, by its id ----
  await page.evaluate((id) => { window.location.hash = `#/conversations/${id}`; }, input.other_conversation_id);
  await page.locator('#alert').filter({ hasText: 'No such conversation' }).waitFor({ timeout: WAIT_MS });
  check(await page.locator('#conversation-body').isHidden(), 'another user\'s conversation shows nothing');
  check(report.expected_404s.length >= 1, `asking for it was answered 404 (${report.expected_404s.join(', ')})`);
  await checkNoLeak(page, 'another user\'s conversation id');

  // ---- The Content-Security-Policy is in force: an injected inline script is refused ----
  const before = report.csp_violations.length;
  await page.evaluate(() => {
    const script = document.createElement('script');
    script.textContent = 'window.__inlineScriptRan = true;';
    document.body.append(script);
  });
  await page.waitForFunction((n) => window.__cspViolations.length > n, before, { timeout: WAIT_MS });
  const ran = await page.evaluate(() => window.__inlineScriptRan === true);
  check(!ran, 'an injected inline script did not run');
  const probe = (await page.evaluate(() => window.__cspViolations)).slice(before);
  check(probe.length === 1 && probe[0].directive.startsWith('script-src'),
    `the CSP refused it (${JSON.stringify(probe)})`);
  // The probe's violation and its console line were expected: leave them out of the report.
  await page.evaluate((n) => { window.__cspViolations.length = n; }, before);
  report.console = report.console.filter((line) => !line.includes('inline script'));

  // ---- Sign out forgets the token and the data ----
  await page.locator('#sign-out').click();
  await page.locator('#sign-in').waitFor({ state: 'visible', timeout: WAIT_MS });
  check((await page.locator('#task-rows tr').count()) === 0, 'signing out clears the tasks');
  check((await page.locator('#timeline li').count()) === 0, 'signing out clears the timeline');
  check((await page.evaluate(() => sessionStorage.length)) === 0, 'signing out clears session storage');
}

async function main() {
  fs.mkdirSync(input.screenshot_dir, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'todo-mcp-ui-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: input.chromium,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 860 },
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  try {
    // Every CSP violation, as the page's own event reports it (an init script is the
    // browser's, not the page's: the CSP does not apply to it).
    await context.addInitScript(() => {
      window.__cspViolations = [];
      document.addEventListener('securitypolicyviolation', (event) => {
        window.__cspViolations.push({
          directive: event.violatedDirective,
          blocked: event.blockedURI,
          sample: event.sample,
        });
      });
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on('console', (message) => {
      const text = message.text();
      if (message.type() !== 'error' && !/Refused to|Content.Security.Policy/i.test(text)) return;
      const { url } = message.location();
      // Asking for another user's conversation is answered 404, which chromium logs as an
      // error: expected, and counted apart. Any other error fails the test.
      if (/status of 404/.test(text) && url.includes(`/conversations/${input.other_conversation_id}/`)) {
        report.expected_404s.push(url);
      } else {
        report.console.push(`${message.type()}: ${text}${url ? ` (${url})` : ''}`);
      }
    });
    page.on('pageerror', (error) => report.console.push(`pageerror: ${error.message}`));
    page.on('requestfailed', (request) => {
      report.console.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
    });
    // Every answer the page gets from the API must be free of the other user's data.
    page.on('response', async (response) => {
      if (!response.url().includes('/ui/api/')) return;
      report.api_responses += 1;
      try {
        const found = leaks(await response.text());
        if (found.length) report.failures.push(`${response.url()} answered with ${found.join(', ')}`);
      } catch (error) {
        log(`could not read ${response.url()}: ${error.message}`);
      }
    });
    try {
      await run(page);
    } catch (error) {
      report.failures.push(`the walk stopped: ${error.message.split('\n')[0]}`);
      try {
        await screenshot(page, 'ui-failure.png');
      } catch (shotError) {
        log(`no failure screenshot: ${shotError.message}`);
      }
    }
    try {
      report.csp_violations = await page.evaluate(() => window.__cspViolations);
    } catch (error) {
      report.failures.push(`could not read the CSP violations: ${error.message}`);
    }
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

main().catch((error) => {
  log(`could not run: ${error.stack || error}`);
  process.exit(1);
});

'use strict'
// Tabs with the native CDP source against a real headless Chromium: extended viewers get the
// agent's pages (`{"type":"tabs"}`) when they change, the controller shows another one with
// `tab-select`, view-only viewers and bad ids are refused, compat viewers get no tab list, and
// a toolset source answers `tabs_unavailable`. The browser is driven as an agent would, with
// playwright-core.

const test = require('node:test')
const assert = require('node:assert/strict')
const { chromium: playwright } = require('playwright-core')
const { launchChromium, findChromium } = require('./support/chromium')
const { startSite } = require('./support/site')
const { startServer, Viewer, FakeToolset, waitFor } = require('./support')

const chromePath = findChromium()
const skip = chromePath ? false : 'Chromium not found: install chromium or set CHROME_PATH'
const slow = { timeout: 20_000 }

/** The two pages the agent has open. */
function startTabsSite() {
  const page = (title, colour) => `<!doctype html><title>${title}</title><body style="background:${colour}"><h1>${title}</h1></body>`
  return startSite({ '/first': page('first page', '#8df'), '/second': page('second page', '#fd8') })
}

const tabLists = (viewer) => viewer.json.filter((m) => m.type === 'tabs')
const lastTabs = (viewer) => tabLists(viewer).at(-1)?.tabs
/** Waits until the viewer's newest tab list satisfies `predicate`; resolves with it. */
const untilTabs = (viewer, predicate, what) => waitFor(() => lastTabs(viewer) && predicate(lastTabs(viewer)) && lastTabs(viewer), { what, ...slow })

test('tabs: the list follows the agent pages and the controller switches between them', { skip, timeout: 120_000 }, async (t) => {
  const site = await startTabsSite()
  t.after(() => site.close())
  const browser = await launchChromium({ url: site.url('/first') })
  t.after(() => browser.close())
  const srv = await startServer({
    getCdpEndpoint: () => browser.endpoint,
    authorizeControl: (c) => c.req.header('x-role') !== 'watcher',
  })
  t.after(() => srv.close())
  const agent = await playwright.connectOverCDP(browser.endpoint)
  t.after(() => agent.close().catch(() => {}))
  const context = agent.contexts()[0]

  const controller = new Viewer(srv.url('tabs-agent'), { extended: true })
  const watcher = new Viewer(srv.url('tabs-agent'), { extended: true, headers: { 'x-role': 'watcher' } })
  const compat = new Viewer(srv.url('tabs-agent'))
  t.after(() => Promise.all([controller.close(), watcher.close(), compat.close()]))
  await Promise.all([controller.untilMeta(), watcher.untilMeta(), compat.opened])

  const first = await untilTabs(controller, (tabs) => tabs.length === 1 && tabs[0].title === 'first page', 'the first page listed')
  assert.deepEqual(Object.keys(first[0]).sort(), ['id', 'shown', 'title', 'url'])
  assert.equal(first[0].shown, true)
  assert.equal(first[0].url, site.url('/first'))
  assert.equal(typeof first[0].id, 'number', 'a number of ours, not the DevTools target id')

  // The agent opens a tab: listed, and shown (new tabs are followed by default).
  const second = await context.newPage()
  await second.goto(site.url('/second'))
  const both = await untilTabs(controller, (tabs) => tabs.length === 2 && tabs.some((tab) => tab.title === 'second page' && tab.shown), 'the second page listed and shown')
  const firstTab = both.find((tab) => tab.title === 'first page')
  const secondTab = both.find((tab) => tab.title === 'second page')
  assert.equal(firstTab.id, first[0].id, 'ids are stable')
  assert.equal(firstTab.shown, false)
  await controller.waitJson((m) => m.url === site.url('/second'), { what: 'the url of the shown page', ...slow })
  // Joiners get the current list at once.
  const joiner = new Viewer(srv.url('tabs-agent'), { extended: true })
  t.after(() => joiner.close())
  await untilTabs(joiner, (tabs) => tabs.length === 2, 'the joiner gets the list')

  // Only the controller switches; a view-only viewer and a bad id are refused.
  watcher.send({ type: 'tab-select', id: firstTab.id })
  await watcher.waitJson((m) => m.error === 'control_denied', { what: 'view-only refused' })
  controller.send({ type: 'tab-select', id: firstTab.id })
  await controller.waitJson((m) => m.error === 'not_controller', { what: 'control needed first' })
  controller.send({ type: 'control-request' })
  await controller.waitJson((m) => m.type === 'control' && m.you === true, { what: 'control' })
  controller.send({ type: 'tab-select', id: 987_654 })
  await controller.waitJson((m) => m.error === 'bad_tab', { what: 'a bad id refused' })
  controller.send({ type: 'tab-select', id: 'x' })
  await controller.waitJson((m) => m.error === 'bad_message', { what: 'a malformed id refused' })
  const fromSelect = controller.json.length
  controller.send({ type: 'tab-select', id: firstTab.id })
  await untilTabs(watcher, (tabs) => tabs.find((tab) => tab.id === firstTab.id)?.shown === true, 'everyone sees the first page shown')
  await controller.waitJson((m) => m.url === site.url('/first'), { from: fromSelect, what: 'the url of the page shown now', ...slow })

  // The agent closes the second page: the list shrinks.
  await second.close()
  await untilTabs(controller, (tabs) => tabs.length === 1 && tabs[0].id === firstTab.id, 'the closed page leaves the list')
  assert.ok(!lastTabs(controller).some((tab) => tab.id === secondTab.id))
  // Compat viewers (Studio) know no tab list.
  assert.equal(compat.json.filter((m) => m.type === 'tabs').length, 0)
  // The session ends (the close route, a crash): its tabs are forgotten, and viewers told.
  await srv.registry.closeBrowserSessionOf('tabs-agent')
  await untilTabs(controller, (tabs) => tabs.length === 0, 'an empty list once the session ended')
})

test('tabs: a toolset source lists none and answers tab-select with tabs_unavailable', async (t) => {
  const toolset = new FakeToolset()
  const srv = await startServer({ getToolset: () => toolset, implicitControl: true })
  t.after(() => srv.close())
  const viewer = new Viewer(srv.url('toolset-tabs'), { extended: true })
  t.after(() => viewer.close())
  await viewer.untilStreaming()
  viewer.send({ type: 'control-request' })
  await viewer.waitJson((m) => m.type === 'control' && m.you === true, { what: 'control' })
  viewer.send({ type: 'tab-select', id: 1 })
  await viewer.waitJson((m) => m.error === 'tabs_unavailable', { what: 'tabs unavailable' })
  assert.equal(tabLists(viewer).length, 0)
})

"""The Dagster UI in a real browser: Debian's chromium, driven by Playwright, against a real `dagster-webserver`.

`composable demo` materializes the sample (a first sync, a day of changes, a second sync) on a temporary
DAGSTER_HOME and data folder, as `make demo` does; then the webserver alone is started on them (no daemon: no
sensor or schedule runs meanwhile, so the pages show what the demo left). Each test opens a page by its URL, waits
on its content (never on a sleep), and checks what it shows against the project files or the warehouse. The
screenshots in docs/screenshots/, shown by docs/getting-started.md (and one by the README), are rewritten by every run.

On a failure the page's screenshot and HTML are saved in the test's tmp folder, and the message says where.
Chromium comes from Debian (`apt-get install chromium`: the test installs it when missing, and so does .ci/run);
Playwright never downloads one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import pytest
import yaml
from playwright.sync_api import Browser, Error as PlaywrightError, Page, expect, sync_playwright

from composable_assets.assets.deltas import GATE_DESCRIPTIONS
from composable_assets.project.keys import AUDIENCES, DELTAS, MODELS, SOURCES, STREAMS, SYNCS, audience_key, delta_key, sync_key
from composable_assets.project import load_project
from composable_assets.project.gates import GATE_NAMES
from composable_assets.settings import DEFAULT_DUCKDB_MEMORY_LIMIT
from composable_assets_tests.demo import SAMPLE_PROJECT_DIR

from .dagster_processes import DagsterProcesses

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1400, "height": 900}
# The audience whose lineage and gates are shown: the sample's VIP audience (a model, two destinations).
AUDIENCE = "vip_customers"
COUNTS = ("added", "updated", "removed", "failed", "unsent")
WAIT_MS = 30_000  # a page's content, once the webserver is up; the first GraphQL answers of a page can take a few s


def url_path(key) -> str:
    """The UI's page of an asset: /assets/a/b/c."""
    return "/assets/" + "/".join(key.path)


@dataclass
class Sample:
    """What the demo left: the webserver showing it, and the warehouse's account of the syncs and their gates."""

    dagster: DagsterProcesses
    location: str
    sync_runs: dict[tuple[str, str], dict]  # (audience, destination) -> its latest sync run
    gate_details: dict[str, str]  # gate -> the detail of its latest verdict on AUDIENCE's first destination


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Iterator[Sample]:
    root = tmp_path_factory.mktemp("ui")
    home, data = root / "dagster_home", root / "data"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # the instance `make ui` uses
    env = {
        "DAGSTER_HOME": str(home),
        "COMPOSABLE_DATA_DIR": str(data),
        "COMPOSABLE_PROJECT_DIR": str(SAMPLE_PROJECT_DIR),
        "COMPOSABLE_WAREHOUSE": f"duckdb:///{data / 'warehouse.duckdb'}?memory_limit={DEFAULT_DUCKDB_MEMORY_LIMIT}",
    }
    # The demo's Braze and Iterable are its local stand-ins unless these point elsewhere.
    demo_env = {k: v for k, v in os.environ.items() if k not in ("BRAZE_REST_ENDPOINT", "ITERABLE_BASE_URL")}
    demo = subprocess.run(
        [str(Path(sys.executable).parent / "composable"), "demo", "--customers", "300"],
        env={**demo_env, **env}, cwd=root, capture_output=True, text=True, timeout=600,
    )
    assert demo.returncode == 0, f"composable demo failed:\n{demo.stdout}\n{demo.stderr}"

    # Read before the webserver starts: its code server may hold the DuckDB file afterwards.
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql(
            "SELECT audience, destination, added, updated, removed, failed, unsent FROM composable.sync_runs "
            "QUALIFY row_number() OVER (PARTITION BY audience, destination ORDER BY finished_at DESC) = 1"
        ).fetchall()
        destination = load_project(SAMPLE_PROJECT_DIR).audiences[AUDIENCE].syncs[0].destination
        gates = con.execute(
            "SELECT gate, detail FROM composable.gate_results WHERE audience = ? AND destination = ? "
            "QUALIFY rank() OVER (ORDER BY checked_at DESC) = 1",
            [AUDIENCE, destination],
        ).fetchall()
    sync_runs = {(r[0], r[1]): dict(zip(COUNTS, r[2:])) for r in rows}
    location = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]["location_name"]
    with DagsterProcesses(home, REPO / "workspace.yaml", env, log_dir=root / "logs", daemon=False) as dagster:
        dagster.graphql("mutation { setNuxSeen }")  # no "join the community" dialog over the pages
        yield Sample(dagster, location, sync_runs, dict(gates))


def install_chromium() -> None:
    """Debian's chromium, installed here when missing (as .ci/run does first); the package lists only if needed."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"apt-get install chromium failed: {done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        install_chromium()
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing after `apt-get install chromium`"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


class UI:
    """Pages of the webserver; `showing` turns any failure into a message with a screenshot and the HTML."""

    def __init__(self, browser: Browser, base_url: str, evidence: Path):
        self.browser, self.base_url, self.evidence = browser, base_url, evidence
        self.context = None
        self.page: Page | None = None

    def open(self, path: str) -> Page:
        """`path` in a new browser context: nothing a page before it remembered (the lineage graph keeps its last
        zoom level in local storage, for one) changes what this one shows."""
        self.close()
        self.context = self.browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.goto(self.base_url + path)
        return self.page

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context, self.page = None, None

    @contextlib.contextmanager
    def showing(self, what: str) -> Iterator[None]:
        try:
            yield
        except (AssertionError, PlaywrightError) as exc:
            if self.page is None:
                raise
            name = "".join(c if c.isalnum() else "_" for c in what)[:60]
            png, html = self.evidence / f"{name}.png", self.evidence / f"{name}.html"
            with contextlib.suppress(PlaywrightError):
                self.page.screenshot(path=png, full_page=True)
            with contextlib.suppress(PlaywrightError):
                html.write_text(self.page.content())
            raise AssertionError(
                f"the UI does not show {what} at {self.page.url}: {exc}\nscreenshot: {png}\npage HTML: {html}"
            ) from exc

    def screenshot(self, name: str) -> None:
        """docs/screenshots/NAME.png, once the page's queries have settled (statuses drawn, not "loading")."""
        self.page.wait_for_load_state("networkidle")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png")

    @staticmethod
    def scroll_to_top(locator) -> None:
        """Scroll the element to the top of its scrolling pane."""
        locator.evaluate("element => element.scrollIntoView({block: 'start'})")

    def metadata_table(self) -> dict[str, str]:
        """Key -> value text of the latest materialization's metadata table on an asset's overview."""
        return self.page.evaluate(
            """() => {
                const table = [...document.querySelectorAll('table')].find(
                    t => t.querySelector('thead')?.innerText.match(/Key\\s+Timestamp\\s+Value/));
                if (!table) return {};
                // Only the table's own rows and cells: a Markdown value (a sample table) nests a table of its own.
                const rows = [...table.querySelectorAll(':scope > tbody > tr')]
                    .map(row => row.querySelectorAll(':scope > td')).filter(cells => cells.length >= 2);
                return Object.fromEntries(rows.map(cells =>
                    [cells[0].innerText.trim(), cells[cells.length - 1].innerText.trim()]));
            }"""
        )

    def fit_graph(self) -> None:
        """Zoom the graph out until every node fits, then drag it to the middle (for a screenshot that shows it all)."""
        box = """() => {
            const svg = [...document.querySelectorAll('svg')].find(s => s.querySelector('foreignObject'));
            let pane = svg.parentElement;  // the graph's pane: the nearest ancestor that also holds the zoom buttons
            while (!pane.querySelector('[aria-label=zoom_out]')) pane = pane.parentElement;
            const box = pane.getBoundingClientRect();
            // The search bar lies over the top of the pane.
            const bar = document.querySelector('[aria-label="Search and filter assets"]').closest('div[class*=inputDiv]');
            const top = Math.max(box.top, bar ? bar.getBoundingClientRect().bottom + 8 : box.top);
            const area = {left: box.left, top: top, width: box.width, height: box.bottom - top};
            const rects = [...svg.querySelectorAll('foreignObject')].map(f => f.getBoundingClientRect());
            const left = Math.min(...rects.map(r => r.left)), right = Math.max(...rects.map(r => r.right));
            const upper = Math.min(...rects.map(r => r.top)), bottom = Math.max(...rects.map(r => r.bottom));
            return {area: [area.left, area.top, area.width, area.height], content: [left, upper, right - left, bottom - upper]};
        }"""
        zoom_out = self.page.locator("button:has([aria-label=zoom_out])")
        for _ in range(6):
            b = self.page.evaluate(box)
            if b["content"][2] <= b["area"][2] and b["content"][3] <= b["area"][3]:
                break
            zoom_out.click()
            self.page.wait_for_function(f"() => ({box})().content[2] < {b['content'][2] - 1}")
        b = self.page.evaluate(box)
        (ax, ay, aw, ah), (cx, cy, cw, ch) = b["area"], b["content"]
        start = (ax + 8, ay + ah - 8)  # a corner of the pane, away from any node (pressing a node opens it)
        self.page.mouse.move(*start)
        self.page.mouse.down()
        self.page.mouse.move(start[0] + (ax + aw / 2) - (cx + cw / 2), start[1] + (ay + ah / 2) - (cy + ch / 2), steps=8)
        self.page.mouse.up()


@pytest.fixture
def ui(browser, sample, tmp_path) -> Iterator[UI]:
    expect.set_options(timeout=WAIT_MS)
    ui = UI(browser, sample.dagster.url, tmp_path)
    try:
        yield ui
    finally:
        ui.close()


def test_the_asset_graph_shows_every_layer_and_the_syncs_group_lists_every_sync(ui, sample):
    project = load_project(SAMPLE_PROJECT_DIR)
    syncs = {url_path(sync_key(a.name, s.destination)) for a in project.audiences.values() for s in a.syncs}
    assert "/assets/sync/vip_customers/braze" in syncs

    with ui.showing("the global asset graph with a group per layer"):
        page = ui.open("/asset-groups")
        for group in (SOURCES, MODELS, AUDIENCES, DELTAS, SYNCS, STREAMS):
            expect(page.get_by_text(group, exact=True).last).to_be_visible()
        page.keyboard.press("Alt+e")  # "Expand all groups"
        for model in project.models:
            expect(page.get_by_text(model, exact=True).first).to_be_visible()
        for audience in project.audiences:
            expect(page.get_by_text(audience, exact=True).first).to_be_visible()
        page.locator("button:has([aria-label=panel_show_right])").last.click()  # the group tree: room for the graph
        ui.fit_graph()
        expect(page.get_by_text(SYNCS, exact=True).last).to_be_in_viewport()
        ui.screenshot("asset-graph")

    with ui.showing("the syncs group listing every sync asset"):
        page = ui.open(f"/locations/__repository__@{sample.location}/asset-groups/{SYNCS}/list")
        links = page.locator("a[href^='/assets/']:not([href*='?'])")
        expect(links.first).to_be_visible()
        for path in syncs:
            expect(page.locator(f"a[href='{path}']")).to_be_visible()
        listed = {href for href in links.evaluate_all("links => links.map(a => a.getAttribute('href'))")}
        assert listed == syncs, f"assets listed in the {SYNCS} group: {sorted(listed)}; the project's syncs: {sorted(syncs)}"


def test_a_sync_page_shows_the_counts_the_warehouse_recorded(ui, sample):
    # A pair whose latest run changed something (a real destination before the outbox), so the numbers mean something.
    def changed(counts: dict) -> int:
        return sum(counts[c] for c in ("added", "updated", "removed"))

    (audience, destination), counts = max(
        sample.sync_runs.items(), key=lambda item: (changed(item[1]) > 0, item[0][1] != "outbox", changed(item[1]), item[0])
    )
    assert changed(counts) > 0, f"nothing changed in the demo's last syncs: {sample.sync_runs}"
    spec = load_project(SAMPLE_PROJECT_DIR).audiences[audience]
    kind = load_project(SAMPLE_PROJECT_DIR).destinations[destination].type
    latest = sample.dagster.latest_materialization(sync_key(audience, destination).path)

    with ui.showing(f"the counts of sync/{audience}/{destination}"):
        page = ui.open(url_path(sync_key(audience, destination)))
        expect(page.get_by_text(f"Delivers {audience} to {destination}")).to_be_visible()
        for owner in spec.owners:
            expect(page.get_by_text(owner, exact=True).first).to_be_visible()
        # The destination's kind (Dagster has an icon for some, e.g. Braze) beside the warehouse's.
        expect(page.get_by_text(re.compile(f"^{kind}$", re.IGNORECASE)).first).to_be_visible()
        expect(page.get_by_text("DuckDB", exact=True).first).to_be_visible()
        rows = page.locator("table:has(thead:has-text('Timestamp')) tbody tr")
        expect(rows.filter(has_text="rows_per_second").first).to_be_visible()
        shown = ui.metadata_table()
        for count in COUNTS:
            assert int(shown[count]) == counts[count], f"{count}: page shows {shown.get(count)}, sync_runs has {counts[count]}"
        rate = float(shown["rows_per_second"].replace(",", ""))
        assert rate > 0 and rate == pytest.approx(latest["metadata"]["rows_per_second"], rel=0.01), (
            f"rows_per_second: page shows {shown['rows_per_second']}, the latest materialization has "
            f"{latest['metadata']['rows_per_second']}"
        )
        assert "rate_limit_wait_seconds" in shown, f"metadata shown: {sorted(shown)}"
        ui.scroll_to_top(page.locator("button", has=page.get_by_text("Metadata", exact=True)))  # the counts fill the screenshot
        expect(rows.filter(has_text="added").first).to_be_in_viewport()
        ui.screenshot("sync-metadata")

    with ui.showing(f"audience/{audience}'s size over time"):
        page = ui.open(url_path(audience_key(audience)))
        page.get_by_role("button", name="Plots").click()
        expect(page.get_by_text("members", exact=True).first).to_be_visible()
        expect(page.locator("canvas, svg.recharts-surface").first).to_be_visible()
        ui.scroll_to_top(page.locator("button", has=page.get_by_text("Metadata", exact=True)))
        ui.screenshot("audience-plots")


def test_an_audience_s_lineage_shows_its_model_upstream_and_its_syncs_downstream(ui, sample):
    spec = load_project(SAMPLE_PROJECT_DIR).audiences[AUDIENCE]
    destinations = [s.destination for s in spec.syncs]
    page_of = url_path(audience_key(AUDIENCE))

    def graph(path: str):
        """The nodes and group boxes of the lineage graph at `path` (not the page's title or breadcrumbs)."""
        return ui.open(path).locator("svg foreignObject")

    with ui.showing(f"{spec.model} upstream of {AUDIENCE}"):
        nodes = graph(f"{page_of}?view=lineage&lineageScope=upstream&lineageDepth=1")
        expect(nodes.get_by_text(AUDIENCE, exact=True)).to_be_visible()
        expect(nodes.get_by_text(spec.model, exact=True)).to_be_visible()
        expect(nodes.get_by_text(MODELS, exact=True)).to_be_visible()
        expect(nodes.get_by_text(DELTAS, exact=True)).to_have_count(0)
        expect(nodes.get_by_text(SYNCS, exact=True)).to_have_count(0)

    with ui.showing(f"the deltas and syncs of {AUDIENCE} downstream"):
        nodes = graph(f"{page_of}?view=lineage&lineageScope=downstream&lineageDepth=2")
        expect(nodes.get_by_text(SYNCS, exact=True)).to_be_visible()
        expect(nodes.get_by_text(DELTAS, exact=True)).to_be_visible()
        for destination in destinations:  # one delta and one sync node per destination
            expect(nodes.get_by_text(destination, exact=True)).to_have_count(2)
        expect(nodes.get_by_text(spec.model, exact=True)).to_have_count(0)

    with ui.showing(f"the lineage of {AUDIENCE} both ways"):
        nodes = graph(f"{page_of}?view=lineage&lineageScope=neighbors&lineageDepth=2")
        for name in (spec.model, AUDIENCE, DELTAS, SYNCS):
            expect(nodes.get_by_text(name, exact=True)).to_be_visible()
        # Left to right is upstream to downstream: model, audience, deltas, syncs.
        x = [nodes.get_by_text(name, exact=True).bounding_box()["x"] for name in (spec.model, AUDIENCE, DELTAS, SYNCS)]
        assert x == sorted(x), f"horizontal positions of {spec.model}, {AUDIENCE}, {DELTAS}, {SYNCS}: {x}"
        ui.screenshot("audience-lineage")


def test_a_delta_s_checks_tab_shows_each_send_gate_with_its_reason(ui, sample):
    destination = load_project(SAMPLE_PROJECT_DIR).audiences[AUDIENCE].syncs[0].destination
    assert set(sample.gate_details) == set(GATE_NAMES), sample.gate_details

    with ui.showing(f"the send gates of delta/{AUDIENCE}/{destination}"):
        page = ui.open(url_path(delta_key(AUDIENCE, destination)) + "?view=checks")
        expect(page.get_by_text(f"Checks ({len(GATE_NAMES)})")).to_be_visible()
        for gate in GATE_NAMES:
            page.get_by_text(gate, exact=True).first.click()
            expect(page.get_by_text(GATE_DESCRIPTIONS[gate], exact=True)).to_be_visible()  # what the gate checks
            expect(page.get_by_text(sample.gate_details[gate], exact=True)).to_be_visible()  # why it passed or failed
            expect(page.get_by_text("This is a blocking asset check.")).to_be_visible()
        page.get_by_text(GATE_NAMES[0], exact=True).first.click()
        expect(page.get_by_text(sample.gate_details[GATE_NAMES[0]], exact=True)).to_be_visible()
        ui.screenshot("delta-checks")


def test_the_resources_page_lists_the_warehouse_the_coordination_store_and_every_destination(ui, sample):
    destinations = sorted(load_project(SAMPLE_PROJECT_DIR).destinations)
    page = ui.open(f"/locations/{sample.location}/resources")
    with ui.showing("the Resources page listing every resource"):
        for key in ["warehouse", "coordination", *(f"destination_{d}" for d in destinations)]:
            expect(page.get_by_text(key, exact=True).first).to_be_visible()
    page = ui.open(f"/locations/{sample.location}/resources/destination_braze")
    with ui.showing("a destination resource's settings, its secret as the variable's name"):
        expect(page.get_by_text("DestinationResource", exact=True).first).to_be_visible()
        expect(page.get_by_text(re.compile('"api_key": {"env": "BRAZE_API_KEY"}')).first).to_be_visible()

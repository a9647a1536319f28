//! The wallboard in a real browser (headless Chromium): a pushed report shows on its tile within a second, the page
//! reconnects by itself after the aggregator restarts and shows what changed meanwhile, and it keeps up with 300
//! providers and an update every 100 ms (measured and printed, not asserted).

use std::time::{Duration, Instant};

use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::redis::RedisProcess;

use crate::browser::Browser;
use crate::support::*;

fn cell(provider: &str, metric: &str) -> String {
    format!("document.querySelector('#tile-{provider} .cell[data-metric=\"{metric}\"]')")
}

const OCCUPIED: &str = "beds.cc_adult.occupied";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_report_changes_the_tile_within_a_second() {
    let server = Server::start("").await;
    let mut provider = server.provider().await;
    // The hour before: 12 beds free; now 10. The tile shows the change since the previous hour.
    let before = report("RJ7", 1, 1, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 8.0)]);
    assert_eq!(provider.submit(before).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    let first = report("RJ7", 0, 1, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 10.0)]);
    assert_eq!(provider.submit(first).await.unwrap().into_inner().outcome(), Outcome::Accepted);

    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}/?system=QWE", server.url));
    browser.wait_for(&page, &format!("{}.textContent === '10'", cell("RJ7", OCCUPIED)), DEADLINE);
    browser.wait_for(&page, "document.querySelector('#link').classList.contains('live')", DEADLINE);
    let delta = "document.querySelector('#tile-RJ7 .delta[data-delta=\"beds.cc_adult.free\"]').textContent";
    browser.wait_for(&page, &format!("{delta} === '▼2'"), DEADLINE);
    // Fewer free beds is worse, whichever way the arrow points.
    let verdict = "document.querySelector('#tile-RJ7 .delta[data-delta=\"beds.cc_adult.free\"]').className";
    assert_eq!(browser.eval(&page, verdict), "delta bad");
    // 10 of 20 beds free: green, and so the tile's frame.
    let free = "document.querySelector('#tile-RJ7 .val .cell[data-metric=\"beds.cc_adult.free\"]')";
    assert_eq!(browser.eval(&page, &format!("{free}.className")), "cell green");
    assert!(
        browser.eval(&page, "document.querySelector('#tile-RJ7').classList.contains('worst-green')").as_bool().unwrap()
    );
    assert_eq!(browser.eval(&page, "document.querySelector('#scope-name').textContent"), "South West London ICB");

    // 19 of 20 beds: 95% occupancy, red.
    let flashes = browser.eval(&page, "window.sitrepStats.flashes").as_u64().unwrap();
    let second = report("RJ7", 0, 2, &[(OCCUPIED, 19.0)]);
    let sent = Instant::now();
    assert_eq!(provider.submit(second).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    let shown = format!("{}.textContent === '19' && {free}.classList.contains('amber')", cell("RJ7", OCCUPIED));
    browser.wait_for(&page, &shown, Duration::from_secs(1));
    println!("wallboard: report pushed -> tile shows the number and colour in {:?}", sent.elapsed());
    // The same event moved the free beds, the tile's frame (95% occupancy is red), the system's total, and the
    // alerts panel.
    assert_eq!(browser.eval(&page, &format!("{free}.textContent")), "1");
    assert!(
        browser.eval(&page, "document.querySelector('#tile-RJ7').classList.contains('worst-red')").as_bool().unwrap()
    );
    let total = "document.querySelector('#total-system-QWE .cell[data-metric=\"beds.cc_adult.occupied\"]').textContent";
    assert_eq!(browser.eval(&page, total), "19");
    // The tickers are redrawn on the next frame.
    let alert = "document.querySelector('#alerts').textContent.includes('Adult critical care occupancy is 95%')";
    browser.wait_for(&page, alert, DEADLINE);
    let flashed = browser.eval(&page, "window.sitrepStats.flashes").as_u64().unwrap();
    assert!(flashed >= flashes + 3, "the changed values flashed (occupied, free, the system's total): {flashed}");

    // A report from another London system, whose tile is not on this wall, still moves London's total here.
    let london =
        "document.querySelector('#total-region-Y56 .cell[data-metric=\"beds.cc_adult.occupied\"]').textContent";
    assert_eq!(browser.eval(&page, london), "19");
    let ral = report("RAL", 0, 1, &[("beds.cc_adult.open", 30.0), (OCCUPIED, 5.0)]);
    assert_eq!(provider.submit(ral).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    browser.wait_for(&page, &format!("{london} === '24'"), DEADLINE);
    assert_eq!(browser.eval(&page, "document.querySelector('#tile-RAL')"), serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_after_a_restart_and_shows_what_changed_meanwhile() {
    let redis = RedisProcess::start().expect("redis-server");
    let addr = free_addr();
    let a = Server::start_full("", &["--redis", &redis.url()], &addr, &[]).await;
    let first = report("RJ7", 0, 1, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 10.0)]);
    assert_eq!(a.provider().await.submit(first).await.unwrap().into_inner().outcome(), Outcome::Accepted);

    let mut browser = Browser::launch();
    let page = browser.open(&format!("http://{addr}/?system=QWE"));
    browser.wait_for(&page, &format!("{}.textContent === '10'", cell("RJ7", OCCUPIED)), DEADLINE);
    browser.wait_for(&page, "document.querySelector('#link').classList.contains('live')", DEADLINE);

    drop(a);
    browser.wait_for(&page, "document.querySelector('#link').classList.contains('reconnecting')", DEADLINE);
    // While the page's aggregator is away, another replica takes a report.
    let other = Server::start_redis(&redis.url()).await;
    let meanwhile = report("RJ7", 0, 2, &[(OCCUPIED, 17.0)]);
    assert_eq!(other.provider().await.submit(meanwhile).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    drop(other);
    let _back = Server::start_full("", &["--redis", &redis.url()], &addr, &[]).await;
    let took =
        browser.wait_for(&page, &format!("{}.textContent === '17'", cell("RJ7", OCCUPIED)), Duration::from_secs(45));
    println!("wallboard: back on screen {took:?} after the aggregator restarted");
    browser.wait_for(&page, "document.querySelector('#link').classList.contains('live')", DEADLINE);
    let stats = browser.eval(&page, "JSON.stringify(window.sitrepStats, ['connects', 'resets', 'snapshots'])");
    let stats: serde_json::Value = serde_json::from_str(stats.as_str().unwrap()).unwrap();
    assert!(stats["connects"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["resets"], 0, "it resumed from its cursor, not from a fresh snapshot: {stats}");
    assert_eq!(stats["snapshots"], 1, "{stats}");
}

/// 300 providers on screen and a report every 100 ms. Prints the time from each SSE message to the DOM being
/// updated (the handler's work) and to the next frame; asserts only that every update was shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_providers_and_an_update_every_100_ms() {
    let mut directory =
        String::from("[nation]\ncode = \"ENG\"\nname = \"England\"\n[[region]]\ncode = \"R1\"\nname = \"Region\"\n");
    for s in 1..=10 {
        directory.push_str(&format!("[[system]]\ncode = \"S{s:02}\"\nname = \"System {s}\"\nregion = \"R1\"\n"));
    }
    for p in 1..=300 {
        directory.push_str(&format!(
            "[[provider]]\ncode = \"P{p:03}\"\nname = \"Provider {p}\"\nsystem = \"S{:02}\"\nkind = \"acute\"\n",
            (p - 1) / 30 + 1
        ));
    }
    let server = Server::start_with_directory(&directory).await;
    let mut client = server.provider().await;
    let mut feed = Feed::open(&mut client).await;
    let values = |i: u32| {
        [
            ("beds.cc_adult.open", 30.0),
            (OCCUPIED, f64::from(20 + i % 10)),
            ("beds.ga_adult.open", 500.0),
            ("beds.ga_adult.occupied", f64::from(440 + i % 60)),
            ("ed.over_12h", f64::from(i % 20)),
            ("ambulance.handover_over_60", f64::from(i % 7)),
            ("opel.level", f64::from(1 + i % 4)),
        ]
    };
    for p in 1..=300u32 {
        let ack = feed.send(report(&format!("P{p:03}"), 0, 1, &values(p))).await;
        assert_eq!(ack.outcome(), Outcome::Accepted, "{ack:?}");
    }
    let mut browser = Browser::launch();
    let page = browser.open(&server.url);
    browser.wait_for(&page, "document.querySelectorAll('.tile:not(.never)').length === 300", DEADLINE);
    browser.wait_for(&page, "document.querySelector('#link').classList.contains('live')", DEADLINE);

    let updates = 100u32;
    let start = Instant::now();
    for n in 0..updates {
        let p = n * 37 % 300 + 1;
        let ack = feed.send(report(&format!("P{p:03}"), 0, 2 + n, &values(p + n + 1))).await;
        assert_eq!(ack.outcome(), Outcome::Accepted);
        let next = start + Duration::from_millis(100 * u64::from(n + 1));
        tokio::time::sleep_until(next.into()).await;
    }
    browser.wait_for(&page, &format!("window.sitrepStats.events >= {updates}"), DEADLINE);
    let summary = browser.eval(
        &page,
        "(() => { const q = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };\
         const s = window.sitrepStats; return JSON.stringify({ events: s.events, dom: [q(s.samples, 0.5), q(s.samples, 0.99), Math.max(...s.samples)],\
         frame: [q(s.frames, 0.5), q(s.frames, 0.99), Math.max(...s.frames)], tiles: document.querySelectorAll('.tile').length }); })()",
    );
    let s: serde_json::Value = serde_json::from_str(summary.as_str().unwrap()).unwrap();
    println!(
        "wallboard: {} tiles, {} updates in {:.1} s; SSE message -> DOM updated p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; -> next frame p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        s["tiles"],
        s["events"],
        start.elapsed().as_secs_f64(),
        s["dom"][0].as_f64().unwrap(),
        s["dom"][1].as_f64().unwrap(),
        s["dom"][2].as_f64().unwrap(),
        s["frame"][0].as_f64().unwrap(),
        s["frame"][1].as_f64().unwrap(),
        s["frame"][2].as_f64().unwrap(),
    );
    assert_eq!(s["tiles"], 300);
    assert!(s["events"].as_u64().unwrap() >= u64::from(updates));
}

/// A provider that misses its hour is marked stale on its tile, and unmarked by its next report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_provider_is_marked_stale_until_it_reports() {
    let server = Server::start(&stale_after_previous_hour(2)).await;
    let mut provider = server.provider().await;
    let first = report("RJ7", 1, 1, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 10.0)]);
    assert_eq!(provider.submit(first).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}/?provider=RJ7", server.url));
    browser.wait_for(&page, "document.querySelector('#tile-RJ7.stale') !== null", DEADLINE);
    // A large badge with the age, values dimmed and unrated, the frame no longer a rating.
    let badge = browser.eval(&page, "document.querySelector('#tile-RJ7 .stale-badge').textContent");
    assert!(badge.as_str().unwrap().starts_with("STALE · "), "{badge}");
    assert!(
        browser.eval(&page, "document.querySelector('#tile-RJ7 .stale-badge').offsetHeight > 0").as_bool().unwrap()
    );
    let value = "document.querySelector('#tile-RJ7 .val .cell[data-metric=\"beds.cc_adult.free\"]')";
    assert_eq!(browser.eval(&page, &format!("getComputedStyle({value}).backgroundColor")), "rgba(0, 0, 0, 0)");
    assert_eq!(browser.eval(&page, "document.querySelector('#tile-RJ7').dataset.worst"), "");
    browser.wait_for(
        &page,
        "document.querySelector('#alerts').textContent.includes('its latest report is for')",
        DEADLINE,
    );
    let again = report("RJ7", 0, 2, &[(OCCUPIED, 11.0)]);
    assert_eq!(provider.submit(again).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    browser.wait_for(&page, "document.querySelector('#tile-RJ7.stale') === null", DEADLINE);
}

/// The demo wallboard, saved as a picture (to `$SITREP_SCREENSHOT`, or the test's scratch directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_wallboard_screenshot() {
    let server = Server::start_with("", &["--demo", "--demo-seconds-per-hour", "0.5"]).await;
    let mut browser = Browser::launch();
    let page = browser.open(&server.url);
    browser.wait_for(&page, "document.querySelectorAll('.tile:not(.never)').length >= 15", DEADLINE);
    browser.wait_for(&page, "document.querySelector('#link').classList.contains('live')", DEADLINE);
    std::thread::sleep(Duration::from_millis(1500));
    let png = browser.screenshot(&page);
    assert_eq!(&png[1..4], b"PNG");
    let path =
        std::env::var("SITREP_SCREENSHOT").unwrap_or_else(|_| format!("{}/wallboard.png", env!("CARGO_TARGET_TMPDIR")));
    std::fs::write(&path, png).unwrap();
    println!("wallboard screenshot: {path}");
}

/// A directory of `providers` providers in systems of ten, their service types in turn (every fifth acute
/// provider a specialist, and so on), in one region.
fn directory_of(providers: u32) -> String {
    let mut directory =
        String::from("[nation]\ncode = \"ENG\"\nname = \"England\"\n[[region]]\ncode = \"R1\"\nname = \"Region\"\n");
    for s in 1..=providers.div_ceil(10) {
        directory.push_str(&format!("[[system]]\ncode = \"S{s:02}\"\nname = \"System {s}\"\nregion = \"R1\"\n"));
    }
    let kinds = ["acute", "acute", "mental_health", "acute", "community", "acute", "ambulance", "acute", "specialist"];
    for p in 1..=providers {
        directory.push_str(&format!(
            "[[provider]]\ncode = \"P{p:03}\"\nname = \"Provider {p} NHS Trust\"\nsystem = \"S{:02}\"\nkind = \"{}\"\n",
            (p - 1) / 10 + 1,
            kinds[p as usize % kinds.len()],
        ));
    }
    directory
}

/// Reports for every provider of [`directory_of`]: beds of every kind, ED, handovers and staff absence.
async fn report_all(server: &Server, providers: u32) {
    let mut client = server.provider().await;
    let mut feed = Feed::open(&mut client).await;
    for p in 1..=providers {
        let values = [
            ("beds.cc_adult.open", 30.0),
            (OCCUPIED, f64::from(20 + p % 10)),
            ("beds.ga_adult.open", 500.0),
            ("beds.ga_adult.occupied", f64::from(440 + p % 60)),
            ("beds.mh_adult.open", 100.0),
            ("beds.mh_adult.occupied", 90.0),
            ("ed.over_12h", f64::from(p % 20)),
            ("staff.absence_percent", 4.5),
        ];
        let ack = feed.send(report(&format!("P{p:03}"), 0, 1, &values)).await;
        assert_eq!(ack.outcome(), Outcome::Accepted, "{ack:?}");
    }
}

/// The tiles shown now, entirely inside the viewport, with every visible value inside its tile (not clipped off).
const TILES_IN_VIEW: &str = "JSON.stringify([...document.querySelectorAll('.tile')].filter((t) => { \
    const r = t.getBoundingClientRect(); \
    if (t.hidden || r.width === 0 || r.left < 0 || r.top < 0 || r.right > innerWidth || r.bottom > innerHeight) return false; \
    return [...t.querySelectorAll('.val .cell')].filter((c) => c.getClientRects().length).every((c) => { \
      const b = c.getBoundingClientRect(); return b.top >= r.top && b.bottom <= r.bottom + 0.5 && b.right <= r.right + 0.5; }); \
  }).map((t) => t.id))";

/// Resizes the page to `width` x `height` and waits until it has laid itself out again, readably: P001's values
/// at least 12 px high at 1920x1080, and twice that on a screen twice as big. Returns that size.
fn resize_until_readable(
    browser: &mut Browser,
    page: &crate::browser::Page,
    width: u32,
    height: u32,
) -> serde_json::Value {
    browser.set_viewport(page, width, height);
    browser.eval(page, "window.dispatchEvent(new Event('resize'))");
    let size = "parseFloat(getComputedStyle(document.querySelector('#tile-P001 .val .cell')).fontSize)";
    let least = 12 * width / 1920;
    browser.wait_for(page, &format!("innerWidth === {width} && {size} >= {least}"), DEADLINE);
    browser.eval(page, size)
}

fn tiles_in_view(browser: &mut Browser, page: &crate::browser::Page) -> Vec<String> {
    let ids = browser.eval(page, TILES_IN_VIEW);
    serde_json::from_str(ids.as_str().unwrap()).unwrap()
}

/// Sixty providers fit one page, at 1920x1080 and at 3840x2160: every tile inside the viewport, its values
/// inside it, and no pages to turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_providers_are_all_on_one_screen() {
    let directory = directory_of(60);
    let server = Server::start_with_directory(&directory).await;
    report_all(&server, 60).await;
    let mut browser = Browser::launch();
    let page = browser.open(&server.url);
    browser.wait_for(&page, "document.querySelectorAll('.tile:not(.never)').length === 60", DEADLINE);
    for (width, height) in [(1920, 1080), (3840, 2160)] {
        let size = resize_until_readable(&mut browser, &page, width, height);
        let shown = tiles_in_view(&mut browser, &page);
        assert_eq!(shown.len(), 60, "at {width}x{height}: {shown:?}");
        assert!(browser.eval(&page, "document.querySelector('#pager').hidden").as_bool().unwrap());
        println!("wallboard: 60 providers at {width}x{height}: values {} px", size);
    }
}

/// More providers than a page holds: pages turn by themselves (here every 3 s), the indicator says which, and within
/// one turn of all pages every provider's tile has been on screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_providers_than_fit_are_shown_page_by_page() {
    let directory = directory_of(130);
    let server = Server::start_with_directory(&directory).await;
    report_all(&server, 130).await;
    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}/?rotate=3", server.url));
    browser.wait_for(&page, "document.querySelectorAll('.tile:not(.never)').length === 130", DEADLINE);
    let pages = browser.eval(&page, "document.querySelector('#pager').textContent");
    assert_eq!(pages, "Page 1 of 3", "130 providers, at most 60 a page");
    let mut seen = std::collections::BTreeSet::new();
    for n in 1..=3 {
        browser.wait_for(&page, &format!("document.querySelector('#pager').textContent === 'Page {n} of 3'"), DEADLINE);
        let shown = tiles_in_view(&mut browser, &page);
        assert!(!shown.is_empty() && shown.len() <= 60, "page {n}: {}", shown.len());
        seen.extend(shown);
    }
    assert_eq!(seen.len(), 130, "every provider was on screen within one turn of the pages");
}

/// The demo as a control room sees it: mental health, community and ambulance tiles show their own figures from
/// the catalogue (not dashes), labels are the catalogue's, and no metric code or ISO time is on the page; the clock
/// is 24-hour in the deployment's zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_type_shows_its_own_figures_in_words() {
    let server = Server::start_with("", &["--demo", "--demo-seconds-per-hour", "0.5"]).await;
    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}/?tz=Europe/London", server.url));
    browser.wait_for(&page, "document.querySelectorAll('.tile:not(.never)').length === 21", DEADLINE);
    let directory = crate::http::get(&server.url, "/api/v1/directory").await.json();
    for kind in ["mental_health", "community", "ambulance", "specialist"] {
        let codes: Vec<&str> = directory["providers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == kind)
            .map(|p| p["code"].as_str().unwrap())
            .collect();
        assert!(!codes.is_empty(), "the demo has {kind} providers");
        for code in codes {
            let numbers = format!(
                "[...document.querySelectorAll('#tile-{code} .fig:not([hidden]) .val .cell')].filter((c) => /[0-9]/.test(c.textContent)).length"
            );
            browser.wait_for(&page, &format!("{numbers} >= 1"), DEADLINE);
        }
    }
    // "N open alerts" is what the panel lists, page by page: every alert is on one of its pages.
    browser.wait_for(&page, "document.querySelectorAll('#alerts li[data-key]').length > 0", DEADLINE);
    let alerts = browser.eval(
        &page,
        "(() => { const items = [...document.querySelectorAll('#alerts li[data-key]')];          const pages = new Set(items.map((i) => i.dataset.page));          return JSON.stringify({ title: document.querySelector('#alerts-title').textContent, items: items.length,            pages: pages.size, keys: new Set(items.map((i) => i.dataset.key)).size }); })()",
    );
    let alerts: serde_json::Value = serde_json::from_str(alerts.as_str().unwrap()).unwrap();
    let counted: u64 = alerts["title"].as_str().unwrap().split(' ').next().unwrap().parse().unwrap();
    assert_eq!(counted, alerts["items"].as_u64().unwrap(), "{alerts}");
    assert_eq!(counted, alerts["keys"].as_u64().unwrap(), "{alerts}");
    if alerts["pages"].as_u64().unwrap() > 1 {
        assert!(alerts["title"].as_str().unwrap().contains(&format!("of {}", alerts["pages"])), "{alerts}");
    }
    let mh = browser.eval(&page, "document.querySelector('#tile-RQY').textContent");
    assert!(mh.as_str().unwrap().contains("Adult mental health occupancy"), "{mh}");
    // Let the last hour and the alerts fill, then read the page as a person would.
    browser.wait_for(&page, "document.querySelectorAll('#changes li:not(.empty)').length > 0", DEADLINE);
    let text = browser.eval(&page, "document.body.innerText").as_str().unwrap().to_owned();
    let code = regex_like_code(&text);
    assert!(code.is_none(), "a metric code is on the page: {code:?}");
    let iso = text
        .as_bytes()
        .windows(4)
        .any(|w| w[0].is_ascii_digit() && w[1].is_ascii_digit() && w[2] == b'T' && w[3].is_ascii_digit());
    assert!(!iso, "an ISO time is on the page: {text}");
    let clock = browser.eval(&page, "document.querySelector('#clock').textContent").as_str().unwrap().to_owned();
    assert!(clock.len() >= 8 && clock.as_bytes()[2] == b':' && clock.as_bytes()[5] == b':', "{clock}");
    assert!(clock.ends_with("GMT") || clock.ends_with("BST"), "the zone is shown: {clock}");
    let hours: u32 = clock[..2].parse().unwrap();
    let london = browser.eval(
        &page,
        "Number(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/London', hour: '2-digit', hourCycle: 'h23' }).format(Date.now()))",
    );
    let expected = london.as_u64().unwrap() as u32;
    assert!(hours == expected || (hours + 1) % 24 == expected, "24-hour clock {clock}, London hour {expected}");
}

/// A dotted lower-case code like `beds.cc_adult.open` in `text`, if there is one.
fn regex_like_code(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || ",;:()“”\"".contains(c))
        .find(|w| {
            let parts: Vec<&str> = w.trim_end_matches('.').split('.').collect();
            parts.len() >= 2
                && parts.iter().all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                })
                && parts[0].chars().next().is_some_and(|c| c.is_ascii_lowercase())
        })
        .map(str::to_owned)
}

/// Every piece of text on the page against what it is drawn on, computed in the page: WCAG AA (4.5:1).
const CONTRAST: &str = r#"(() => {
  const parse = (c) => { const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null;
    const v = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number); return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1]; };
  const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const lum = (c) => { const f = (x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const background = (node) => { const layers = [];
    for (let n = node; n; n = n.parentElement) { const bg = parse(getComputedStyle(n).backgroundColor);
      if (bg && bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; } }
    let c = [255, 255, 255, 1]; for (const l of layers.reverse()) c = over(l, c); return c; };
  const opacity = (node) => { let o = 1; for (let n = node; n; n = n.parentElement) o *= Number(getComputedStyle(n).opacity); return o; };
  const failures = []; let checked = 0;
  const check = (node, color, text) => {
    const bg = background(node); const fg = parse(color); if (!fg) { failures.push(`unreadable colour ${color}`); return; }
    fg[3] *= opacity(node);
    const c = over(fg, bg); const a = lum(c), b = lum(bg); const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    checked += 1;
    if (ratio < 4.5) failures.push(`${ratio.toFixed(2)}:1 ${color} on rgb(${bg.slice(0, 3).map(Math.round)}) "${text.slice(0, 40)}" (${node.tagName.toLowerCase()}.${node.className})`);
  };
  for (const node of document.body.querySelectorAll('*')) {
    if (node.tagName === 'SCRIPT' || node.tagName === 'STYLE') continue;
    const style = getComputedStyle(node);
    if (!node.getClientRects().length || style.visibility === 'hidden') continue;
    const own = [...node.childNodes].filter((t) => t.nodeType === 3).map((t) => t.textContent).join('').trim();
    if (own) check(node, style.color, own);
    for (const pseudo of ['::before', '::after']) { const ps = getComputedStyle(node, pseudo);
      if (ps.content && ps.content !== 'none' && ps.content !== 'normal' && ps.content !== '""') check(node, ps.color, ps.content); }
  }
  return JSON.stringify({ checked, failures });
})()"#;

pub fn assert_contrast(browser: &mut Browser, page: &crate::browser::Page, what: &str, at_least: u64) {
    let v = browser.eval(page, CONTRAST);
    let v: serde_json::Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
    assert!(v["checked"].as_u64().unwrap() >= at_least, "{what}: only {} text elements checked", v["checked"]);
    assert_eq!(v["failures"], serde_json::json!([]), "{what}: text below 4.5:1");
    println!("wallboard contrast: {what}: {} text elements, all at least 4.5:1", v["checked"]);
}

/// WCAG AA for all text, in both themes: on the demo (every rating, arrows both ways, alerts, the last hour), on
/// stale tiles, and on the message of a bad address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_text_meets_wcag_aa_contrast_in_both_themes() {
    let demo = Server::start_with("", &["--demo", "--demo-seconds-per-hour", "0.5"]).await;
    let config = stale_after_previous_hour(2);
    let quiet = Server::start(&config).await;
    let mut provider = quiet.provider().await;
    let first = report("RJ7", 1, 1, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 19.0), ("opel.level", 4.0)]);
    assert_eq!(provider.submit(first).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    let mut browser = Browser::launch();
    for theme in ["dark", "light"] {
        let page = browser.open(&format!("{}/?theme={theme}", demo.url));
        browser.wait_for(&page, "document.querySelectorAll('.tile:not(.never)').length === 21", DEADLINE);
        browser.wait_for(&page, "document.querySelector('.delta.good') && document.querySelector('.delta.bad') && document.querySelector('.cell.red')", DEADLINE);
        browser.wait_for(&page, "document.querySelectorAll('#changes li:not(.empty)').length > 0", DEADLINE);
        assert_contrast(&mut browser, &page, &format!("the demo, {theme}"), 300);

        let page = browser.open(&format!("{}/?system=QWE&theme={theme}", quiet.url));
        browser.wait_for(&page, "document.querySelector('#tile-RJ7.stale .stale-badge').offsetHeight > 0", DEADLINE);
        browser.wait_for(&page, "document.querySelector('#alerts li.critical')", DEADLINE);
        assert_contrast(&mut browser, &page, &format!("a stale provider, {theme}"), 40);

        let page = browser.open(&format!("{}/?system=XXX&theme={theme}", quiet.url));
        browser.wait_for(&page, "!document.querySelector('#notice').hidden", DEADLINE);
        assert_contrast(&mut browser, &page, &format!("a bad address, {theme}"), 4);
    }
}

/// An address naming a scope the directory does not have says so on the page, and does not try to connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_scope_is_explained_on_the_page() {
    let server = Server::start("").await;
    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}/?system=XXX", server.url));
    browser.wait_for(&page, "!document.querySelector('#notice').hidden", DEADLINE);
    let notice = browser.eval(&page, "document.querySelector('#notice').innerText").as_str().unwrap().to_owned();
    assert!(notice.contains("Unknown scope") && notice.contains("system “XXX”"), "{notice}");
    assert!(notice.contains("QWE (South West London ICB)"), "the systems it could be: {notice}");
    assert_eq!(browser.eval(&page, "document.querySelector('#link').textContent"), "not connected");
    assert_eq!(browser.eval(&page, "window.sitrepStats.connects"), 0);
    // A known scope on the same server is fine.
    let good = browser.open(&format!("{}/?system=QWE", server.url));
    browser.wait_for(&good, "document.querySelector('#link').classList.contains('live')", DEADLINE);
    assert!(browser.eval(&good, "document.querySelector('#notice').hidden").as_bool().unwrap());
}

/// Coverage on the wall: a provider that reports open beds without occupied ones is left out of the system's free
/// beds, which say how many providers they count and are marked partial; beside the figure, its inputs as counted
/// (the open and occupied beds of the provider with both: 20 open, not the 60 of both). The reporting count is
/// "2/5".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_total_is_marked_partial_with_its_coverage() {
    let server = Server::start("").await;
    let mut provider = server.provider().await;
    let both = report("RJ7", 0, 1, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 10.0)]);
    assert_eq!(provider.submit(both).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}/?system=QWE", server.url));
    let free = "document.querySelector('#total-system-QWE .val .cell[data-metric=\"beds.cc_adult.free\"]').textContent";
    let cover = "document.querySelector('#total-system-QWE .coverage[data-cover=\"beds.cc_adult.free\"]')";
    browser.wait_for(&page, &format!("{free} === '10' && {cover}.textContent === '1/5 providers'"), DEADLINE);
    let open_only = report("RVR", 0, 1, &[("beds.cc_adult.open", 40.0)]);
    assert_eq!(provider.submit(open_only).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    browser.wait_for(&page, &format!("{cover}.textContent === 'PARTIAL 1/5 providers'"), DEADLINE);
    assert_eq!(browser.eval(&page, free), "10", "free beds count only the provider that reported both");
    let inputs = format!("{cover}.parentElement.querySelector('.inputs')");
    assert!(!browser.eval(&page, &format!("{inputs}.hidden")).as_bool().unwrap());
    let counted =
        browser.eval(&page, &format!("[...{inputs}.querySelectorAll('.cell.sub')].map(c => c.textContent).join(' ')"));
    assert_eq!(counted, "20 10", "open and occupied as counted (the catalogue's order for free beds)");
    let reporting = browser.eval(&page, "document.querySelector('#total-system-QWE .cover').textContent");
    assert_eq!(reporting, "2/5 reporting");
}

/// The last hour, filled from history when the page loads: what each report changed, in words, newest first, with
/// the narrative; the narrative is on the provider's tile too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_hour_is_filled_from_history_with_the_narrative() {
    let server = Server::start("").await;
    let mut provider = server.provider().await;
    let first = report("RJ7", 0, 1, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 8.0)]);
    assert_eq!(provider.submit(first).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    let mut second = report("RJ7", 0, 2, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 12.0)]);
    second.narrative = "Ward 3 closed to admissions".into();
    assert_eq!(provider.submit(second).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}/?system=QWE", server.url));
    browser.wait_for(&page, "document.querySelectorAll('#changes li:not(.empty)').length === 2", DEADLINE);
    let newest = browser.eval(&page, "document.querySelector('#changes li').textContent").as_str().unwrap().to_owned();
    assert!(newest.contains("Adult critical care beds occupied 8 → 12"), "{newest}");
    assert!(newest.contains("Ward 3 closed to admissions"), "{newest}");
    // More occupied critical care beds is worse: the arrow says so.
    assert_eq!(browser.eval(&page, "document.querySelector('#changes li .bad').textContent"), "→");
    let tile = browser.eval(&page, "document.querySelector('#tile-RJ7 .foot').textContent");
    assert!(tile.as_str().unwrap().contains("Ward 3 closed to admissions"), "{tile}");
    // A live report adds to it, at the top.
    let third = report("RJ7", 0, 3, &[(OCCUPIED, 11.0)]);
    assert_eq!(provider.submit(third).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    browser.wait_for(&page, "document.querySelector('#changes li').textContent.includes('occupied 12 → 11')", DEADLINE);
    assert_eq!(browser.eval(&page, "document.querySelector('#changes li .good').textContent"), "→");
}

/// A deployment sets what every screen shows in its configuration ([wallboard]): theme, time zone, paging and the
/// key figures of a service type; a screen's address still overrides them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_chooses_what_screens_show_and_an_address_overrides_it() {
    let config = "[wallboard]\ntheme = \"light\"\ntimezone = \"America/New_York\"\nper_page = 3\nrotate_seconds = 600\n\
                  [wallboard.figures]\nacute = [\"ed.over_12h\"]\n";
    let server = Server::start(config).await;
    let mut provider = server.provider().await;
    let r = report("RJ7", 0, 1, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 10.0), ("ed.over_12h", 7.0)]);
    assert_eq!(provider.submit(r).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}/?system=QWE", server.url));
    let shown = "[...document.querySelectorAll('#tile-RJ7 .fig:not([hidden]) .val .cell')].map((c) => c.dataset.metric).join(',')";
    browser.wait_for(&page, &format!("{shown} === 'ed.over_12h'"), DEADLINE);
    assert_eq!(browser.eval(&page, "document.body.classList.contains('light')"), true);
    let clock = browser.eval(&page, "document.querySelector('#clock').textContent").as_str().unwrap().to_owned();
    assert!(clock.ends_with("GMT-5") || clock.ends_with("GMT-4"), "the deployment's zone (New York): {clock}");
    browser.wait_for(&page, "document.querySelector('#pager').textContent === 'Page 1 of 2'", DEADLINE);

    let own = browser.open(&format!("{}/?system=QWE&theme=dark&tz=Europe/London&per_page=60", server.url));
    browser.wait_for(&own, "document.querySelector('#tile-RJ7') !== null", DEADLINE);
    assert_eq!(browser.eval(&own, "document.body.classList.contains('light')"), false);
    let clock = browser.eval(&own, "document.querySelector('#clock').textContent").as_str().unwrap().to_owned();
    assert!(clock.ends_with("GMT") || clock.ends_with("BST"), "the address's zone: {clock}");
    assert_eq!(browser.eval(&own, "document.querySelector('#pager').hidden"), true, "one page of 60");
}

/// A report for `provider`'s `site`, `hours_ago` hours before the current hour.
fn site_report(
    provider: &str,
    site: &str,
    hours_ago: i64,
    revision: u32,
    values: &[(&str, f64)],
) -> sitrep_proto::v1::StatusReport {
    let mut r = report(provider, hours_ago, revision, values);
    r.site = site.into();
    r
}

/// A tile's site lines as the page shows them: each line's parts (name, value, word, age, inputs), in order.
fn site_lines(browser: &mut Browser, page: &crate::browser::Page, provider: &str) -> Vec<Vec<String>> {
    let lines = browser.eval(
        page,
        &format!(
            "JSON.stringify([...document.querySelectorAll('#tile-{provider} .sites .site')].map((l) => \
             [...l.children].map((c) => c.textContent)))"
        ),
    );
    serde_json::from_str(lines.as_str().unwrap()).unwrap()
}

/// A trust that reports by site: its tile shows its figures (the sum of its sites') and beneath them a line for each
/// site with the site's own values, a lagging site marked with its age; a site's new revision moves its line and
/// the trust's figure live, and the last hour says the change was that site's. A trust that reports as a whole has
/// no breakdown. The breakdown stays inside its tile, and its text meets AA contrast in both themes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_reporting_by_site_shows_each_site_on_its_tile() {
    let server = Server::start("").await;
    let mut provider = server.provider().await;
    let mut submit = async |r| assert_eq!(provider.submit(r).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    // RJ7 first as a whole, then by site, both sites revision 1 of this hour; RVR by site, Epsom an hour behind;
    // RAX as a whole.
    submit(report("RJ7", 0, 1, &[("beds.cc_adult.open", 50.0), (OCCUPIED, 30.0), ("ed.over_12h", 4.0)])).await;
    submit(site_report("RJ7", "RJ701", 0, 1, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 15.0)])).await;
    submit(site_report("RJ7", "RJ731", 0, 1, &[("beds.cc_adult.open", 12.0), (OCCUPIED, 11.0)])).await;
    submit(site_report("RVR", "RVR05", 0, 1, &[("beds.cc_adult.open", 14.0), (OCCUPIED, 9.0)])).await;
    submit(site_report("RVR", "RVR50", 1, 1, &[("beds.cc_adult.open", 8.0), (OCCUPIED, 8.0)])).await;
    submit(report("RAX", 0, 1, &[("beds.cc_adult.open", 18.0), (OCCUPIED, 10.0)])).await;

    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}/?system=QWE", server.url));
    let free = "document.querySelector('#tile-RJ7 .val .cell[data-metric=\"beds.cc_adult.free\"]').textContent";
    let inputs = "[...document.querySelectorAll('#tile-RJ7 .fig[data-key=\"beds.cc_adult.free\"] .inputs .cell')].map((c) => c.textContent).join(' ')";
    browser.wait_for(
        &page,
        &format!("{free} === '6' && document.querySelectorAll('#tile-RJ7 .sites .site').length === 2"),
        DEADLINE,
    );
    assert_eq!(
        browser.eval(&page, inputs),
        "32 26",
        "the trust's figure is the sum of its sites': 32 open, 26 occupied"
    );
    // What no site reports is still the trust's own, as a whole; the whole is not a line of the breakdown.
    assert_eq!(browser.eval(&page, &format!("{}.textContent", cell("RJ7", "ed.over_12h"))), "4");
    assert_eq!(
        site_lines(&mut browser, &page, "RJ7"),
        [
            ["St George's", "5", "free", "", "· 20 open · 15 occupied"],
            ["Queen Mary's", "1", "free", "", "· 12 open · 11 occupied"]
        ],
    );
    // Epsom's figures are for the hour before RVR's latest: its line says how old they are.
    let rvr = site_lines(&mut browser, &page, "RVR");
    assert_eq!(rvr.len(), 2, "{rvr:?}");
    assert_eq!(rvr[0][..3], ["St Helier", "5", "free"], "{rvr:?}");
    assert_eq!(rvr[0][3], "", "St Helier's figures are this hour's: {rvr:?}");
    assert_eq!(rvr[1][..3], ["Epsom", "0", "free"], "{rvr:?}");
    assert!(rvr[1][3].ends_with(" ago") && rvr[1][3].contains(" h "), "Epsom is an hour behind: {rvr:?}");
    // A trust that reports as a whole, and one that has not reported, have no breakdown.
    for code in ["RAX", "RJ6"] {
        let hidden = format!("document.querySelector('#tile-{code} .sites').hidden");
        assert!(browser.eval(&page, &hidden).as_bool().unwrap(), "{code} has no breakdown");
        assert!(site_lines(&mut browser, &page, code).is_empty());
    }
    // There is room for the lines: each inside its tile, every tile inside the viewport, in both themes' contrast.
    browser.wait_for(&page, "document.querySelector('#grid').dataset.sites === 'list'", DEADLINE);
    let inside = "[...document.querySelectorAll('.tile .sites .site')].every((l) => { const t = l.closest('.tile').getBoundingClientRect(); \
        const b = l.getBoundingClientRect(); return b.height > 0 && b.top >= t.top && b.bottom <= t.bottom && b.right <= t.right + 0.5; })";
    assert_eq!(browser.eval(&page, inside), true, "every site line is inside its tile");
    assert_eq!(tiles_in_view(&mut browser, &page).len(), 5);
    assert_contrast(&mut browser, &page, "sites, dark", 40);

    // St George's sends revision 2: two more beds occupied. Its line and the trust's figure move; Queen Mary's stays.
    let mut second = site_report("RJ7", "RJ701", 0, 2, &[(OCCUPIED, 17.0)]);
    second.narrative = "Theatre recovery used for ITU".into();
    submit(second).await;
    browser.wait_for(&page, &format!("{free} === '4'"), DEADLINE);
    browser.wait_for(&page, "document.querySelector('#tile-RJ7 .sites .site .sv').textContent === '3'", DEADLINE);
    assert_eq!(
        site_lines(&mut browser, &page, "RJ7"),
        [
            ["St George's", "3", "free", "", "· 20 open · 17 occupied"],
            ["Queen Mary's", "1", "free", "", "· 12 open · 11 occupied"]
        ],
    );
    assert_eq!(browser.eval(&page, inputs), "32 28");
    // The last hour says whose values changed: St George's 15 -> 17, not the trust's 26 -> 28.
    let newest = "document.querySelector('#changes li').textContent";
    browser.wait_for(
        &page,
        &format!("{newest}.includes('St George\\'s: Adult critical care beds occupied 15 → 17')"),
        DEADLINE,
    );
    // Its report as a whole changed what it said as a whole, no longer all of the trust's figures.
    let whole = "[...document.querySelectorAll('#changes li')].map((li) => li.textContent).find((t) => t.includes('as a whole: '))";
    let whole = browser.eval(&page, whole);
    assert!(whole.as_str().is_some_and(|t| t.contains("open – → 50")), "{whole}");
    let narrative = browser.eval(&page, "document.querySelector('#tile-RJ7 .foot').textContent");
    assert!(narrative.as_str().unwrap().contains("St George's: “Theatre recovery used for ITU”"), "{narrative}");

    let light = browser.open(&format!("{}/?system=QWE&theme=light", server.url));
    browser.wait_for(&light, "document.querySelector('#grid').dataset.sites === 'list'", DEADLINE);
    browser.wait_for(&light, "document.querySelectorAll('#tile-RJ7 .sites .site').length === 2", DEADLINE);
    browser.wait_for(&light, "document.querySelectorAll('#changes li:not(.empty)').length > 0", DEADLINE);
    assert_contrast(&mut browser, &light, "sites, light", 40);
}

/// [`directory_of`] with `sites` sites for every provider ("P001S1", "Site 1 of P001 Hospital", ...).
fn directory_with_sites(providers: u32, sites: u32) -> String {
    let directory = directory_of(providers);
    let mut out = String::new();
    for (i, chunk) in directory.split("[[provider]]\n").enumerate() {
        if i > 0 {
            out.push_str("[[provider]]\n");
        }
        out.push_str(chunk);
        if i > 0 {
            let list: Vec<String> = (1..=sites)
                .map(|s| format!("{{ code = \"P{i:03}S{s}\", name = \"Site {s} of P{i:03} Hospital\" }}"))
                .collect();
            out.push_str(&format!("sites = [{}]\n", list.join(", ")));
        }
    }
    out
}

/// Every provider of [`directory_with_sites`] reporting by site: each of its sites its share of the beds.
async fn report_all_by_site(server: &Server, providers: u32, sites: u32) {
    let mut client = server.provider().await;
    let mut feed = Feed::open(&mut client).await;
    for p in 1..=providers {
        for s in 1..=sites {
            let values = [
                ("beds.cc_adult.open", 10.0),
                (OCCUPIED, f64::from(5 + (p + s) % 6)),
                ("beds.ga_adult.open", 150.0),
                ("beds.ga_adult.occupied", f64::from(130 + (p * s) % 20)),
                ("beds.mh_adult.open", 40.0),
                ("beds.mh_adult.occupied", 35.0),
                ("ed.over_12h", f64::from(p % 5)),
                ("staff.absence_percent", 4.5),
            ];
            let ack = feed.send(site_report(&format!("P{p:03}"), &format!("P{p:03}S{s}"), 0, 1, &values)).await;
            assert_eq!(ack.outcome(), Outcome::Accepted, "{ack:?}");
        }
    }
}

/// Site lines that are drawn, each inside its tile (nothing clipped off at the bottom or the side), as
/// `[drawn, inside]`.
const SITE_LINES_INSIDE: &str = "JSON.stringify((() => { const drawn = [...document.querySelectorAll('.tile:not([hidden]) .sites .site')] \
    .filter((l) => l.getClientRects().length); return [drawn.length, drawn.filter((l) => { \
      const t = l.closest('.tile').getBoundingClientRect(); const b = l.getBoundingClientRect(); \
      return b.top >= t.top && b.bottom <= t.bottom + 0.5 && b.right <= t.right + 0.5; }).length]; })())";

/// Site breakdowns make room for themselves without pushing tiles off the screen: a dozen trusts of five sites show
/// four lines each (the last saying how many more); thirty trusts of three sites show each site's value on one line;
/// sixty still fit one page, readable, the breakdown shortened or left out. Every site line drawn is inside its tile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_breakdowns_fit_the_screen() {
    let mut browser = Browser::launch();
    for (trusts, sites, layout) in [(12, 5, Some("list")), (30, 3, Some("line")), (60, 3, None)] {
        let server = Server::start_with_directory(&directory_with_sites(trusts, sites)).await;
        report_all_by_site(&server, trusts, sites).await;
        let page = browser.open(&server.url);
        let drawn = trusts * sites.min(4);
        browser.wait_for(
            &page,
            &format!("document.querySelectorAll('.tile .sites .site').length === {drawn}"),
            DEADLINE,
        );
        if let Some(layout) = layout {
            browser.wait_for(&page, &format!("document.querySelector('#grid').dataset.sites === '{layout}'"), DEADLINE);
        }
        if sites > 4 {
            let more = browser.eval(&page, "document.querySelector('#tile-P001 .sites .site.more').textContent");
            assert_eq!(more, format!("and {} more sites", sites - 3));
        }
        for (width, height) in [(1920, 1080), (3840, 2160)] {
            let size = resize_until_readable(&mut browser, &page, width, height);
            assert_eq!(
                tiles_in_view(&mut browser, &page).len(),
                trusts as usize,
                "{trusts} trusts at {width}x{height}"
            );
            let shown = browser.eval(&page, "document.querySelector('#grid').dataset.sites");
            if let Some(layout) = layout {
                assert_eq!(shown, layout, "{trusts} trusts at {width}x{height}: the same layout, twice the size");
            }
            let lines: [u64; 2] =
                serde_json::from_str(browser.eval(&page, SITE_LINES_INSIDE).as_str().unwrap()).unwrap();
            assert_eq!(lines[0], lines[1], "{trusts} trusts at {width}x{height}: site lines inside their tiles");
            println!(
                "wallboard: {trusts} trusts of {sites} sites at {width}x{height}: breakdown {shown}, {} site lines drawn, values {} px",
                lines[0], size
            );
        }
    }
}

/// Where callers must sign in, a screen that is not signed in says so, rather than showing an empty board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_that_is_not_signed_in_shows_the_signed_out_state() {
    let principals = "[[principal]]\nname = \"nobody yet\"\n";
    let server =
        Server::start_full("[auth]\nprincipals = \"p.toml\"\n", &[], "127.0.0.1:0", &[("p.toml", principals)]).await;
    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}/?system=QWE", server.url));
    browser.wait_for(&page, "!document.querySelector('#notice').hidden", DEADLINE);
    let notice = browser.eval(&page, "document.querySelector('#notice').innerText").as_str().unwrap().to_owned();
    assert!(notice.contains("Signed out") && notice.contains("not signed in"), "{notice}");
    assert_eq!(browser.eval(&page, "document.querySelector('#link').textContent"), "signed out");
    assert_eq!(browser.eval(&page, "document.querySelectorAll('.tile').length"), 0, "no empty board");
}

/// A wallboard signs in with a kiosk link an admin made: the one-time code becomes an HttpOnly session cookie, the
/// code leaves the address, the page says who it is signed in as and shows only its scope's tiles; the link does
/// not work twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_link_signs_a_screen_in_to_its_scope() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["key", "--name", "admin", "--read", "*", "--write", "*", "--admin"])
        .output()
        .await
        .unwrap();
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let lines = String::from_utf8(out.stderr).unwrap().split_once("\n\n").unwrap().1.to_owned();
    let secret = "0123456789abcdef0123456789abcdef-session-key";
    let config = "[auth]\nprincipals = \"p.toml\"\nsession_key = \"session.key\"\n";
    let server = Server::start_full(config, &[], "127.0.0.1:0", &[("p.toml", &lines), ("session.key", secret)]).await;
    // Something to show: RJ7 (in QWE) and RGT (elsewhere) have reported.
    let bearer = sitrep_client::credentials::Bearer::new(&admin).unwrap();
    let mut provider = sitrep_proto::v1::provider_service_client::ProviderServiceClient::new(
        sitrep_client::credentials::authed(server.channel().await, bearer),
    );
    for p in ["RJ7", "RGT"] {
        provider.submit(report(p, 0, 1, &[("beds.cc_adult.open", 20.0), (OCCUPIED, 10.0)])).await.unwrap();
    }
    let auth = format!("Bearer {admin}");
    let body = br#"{"name": "QWE control room wall", "read": ["system:QWE"], "days": 7}"#;
    let made =
        crate::http::request(&server.url, "POST", "/api/v1/kiosk", &[("Authorization", auth.as_str())], body).await;
    assert_eq!(made.status, 200, "{}", String::from_utf8_lossy(&made.body));
    let link = made.json()["link"].as_str().unwrap().to_owned();

    let mut browser = Browser::launch();
    let page = browser.open(&format!("{}{link}", server.url));
    browser.wait_for(&page, "document.querySelector('#tile-RJ7') !== null", DEADLINE);
    browser.wait_for(&page, "document.querySelector('#who').textContent.includes('QWE control room wall')", DEADLINE);
    assert_eq!(browser.eval(&page, "location.search"), "", "the code left the address");
    assert_eq!(browser.eval(&page, "document.cookie"), "", "the session cookie is HttpOnly");
    assert_eq!(browser.eval(&page, "document.querySelector('#tile-RGT') === null"), true, "only its scope");
    // The link is one-time.
    let again = crate::http::get(&server.url, &link).await;
    assert_eq!(again.status, 401);
    assert!(String::from_utf8_lossy(&again.body).contains("already used"));
}

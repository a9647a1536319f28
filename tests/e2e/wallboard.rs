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
    // 10 of 20 beds: green.
    assert_eq!(browser.eval(&page, &format!("{}.className", cell("RJ7", OCCUPIED))), "cell green");
    assert_eq!(browser.eval(&page, "document.querySelector('#scope-name').textContent"), "South West London ICB");

    // 19 of 20 beds: 95% occupancy, red.
    let flashes = browser.eval(&page, "window.sitrepStats.flashes").as_u64().unwrap();
    let second = report("RJ7", 0, 2, &[(OCCUPIED, 19.0)]);
    let sent = Instant::now();
    assert_eq!(provider.submit(second).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    let shown = format!("{0}.textContent === '19' && {0}.classList.contains('red')", cell("RJ7", OCCUPIED));
    browser.wait_for(&page, &shown, Duration::from_secs(1));
    println!("wallboard: report pushed -> tile shows the number and colour in {:?}", sent.elapsed());
    // The same event moved the free beds, the system's total, and the alert ticker.
    assert_eq!(browser.eval(&page, &format!("{}.textContent", cell("RJ7", "beds.cc_adult.free"))), "1");
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
    let server =
        Server::start_full("directory = \"directory.toml\"\n", &[], "127.0.0.1:0", &[("directory.toml", &directory)])
            .await;
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
    let fresh = browser.eval(&page, "getComputedStyle(document.querySelector('#tile-RJ7 .fresh'), '::before').content");
    assert_eq!(fresh, "\"STALE · \"");
    browser.wait_for(
        &page,
        "document.querySelector('#alerts').textContent.includes('RJ7: its latest report is for')",
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

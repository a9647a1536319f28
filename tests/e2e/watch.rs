//! `sitrep watch` over its library, `sitrep_client::follow`: a subscription that outlives its aggregator (it
//! reconnects and resumes from its last cursor), and one that ends at once, naming why, when retrying cannot help.

use std::process::Stdio;
use std::time::Duration;

use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::redis::RedisProcess;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::*;

/// The aggregator a watch follows goes away and comes back on the same address; meanwhile another replica stores
/// a report. The watch resumes from its last cursor: the next thing it prints is that report's event, not a reset
/// or a fresh snapshot.
#[tokio::test]
async fn watch_resumes_from_its_cursor_when_its_aggregator_comes_back() {
    let redis = RedisProcess::start().expect("redis-server");
    let addr = free_addr();
    let followed = Server::start_full("", &["--redis", &redis.url()], &addr, &[]).await;
    let other = Server::start_redis(&redis.url()).await;
    let mut watch = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["watch", "--quiet", "--provider", "RJ7", "--server", &followed.url])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // The next update's line: a snapshot's providers and an event's derived picture follow it, indented.
    let mut line = async || loop {
        let next = tokio::time::timeout(DEADLINE, lines.next_line()).await.expect("a line in time").unwrap();
        let l = next.expect("the watch is still running");
        if !l.starts_with(' ') {
            return l;
        }
    };
    assert!(line().await.starts_with("snapshot: "));
    let mut provider = other.provider().await;
    let first = provider.submit(report("RJ7", 0, 1, &[("beds.cc_adult.open", 30.0)])).await.unwrap().into_inner();
    assert_eq!(first.outcome(), Outcome::Accepted);
    let l = line().await;
    assert!(l.contains(&format!("[{}]", first.cursor)), "{l}");

    drop(followed);
    let missed = provider.submit(report("RJ7", 0, 2, &[("beds.cc_adult.open", 31.0)])).await.unwrap().into_inner();
    assert_eq!(missed.outcome(), Outcome::Accepted);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _back = Server::start_full("", &["--redis", &redis.url()], &addr, &[]).await;
    let l = line().await;
    assert!(l.contains(" r2 ") && l.contains(&format!("[{}]", missed.cursor)), "the missed event, resumed: {l}");
}

/// What retrying cannot fix ends the watch at once, non-zero, saying why: a filter the aggregator refuses (each
/// field at fault named), and an address where something that is not sitrep answers.
#[tokio::test]
async fn watch_stops_on_a_refused_filter_and_on_an_address_that_is_not_sitrep() {
    let server = Server::start("").await;
    let (not_sitrep, _not_sitrep) = crate::feed::not_sitrep().await;
    let run = |args: Vec<String>| async move {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(env!("CARGO_BIN_EXE_sitrep")).arg("watch").args(&args).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("sitrep watch {args:?} did not finish: retrying for ever?"))
        .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, text) =
        run(vec!["--server".into(), server.url.clone(), "--metric".into(), "beds.no_such.open".into()]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("  filter.metrics[0]: ") && text.contains("\"beds.no_such.open\""), "{text}");
    assert!(text.contains("error: the server rejected the subscription: "), "{text}");
    let (code, text) = run(vec!["--server".into(), not_sitrep]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not a sitrep aggregator"), "{text}");
}

//! End-to-end tests of `sitrep feed`, the trust's agent: every input format from a drop folder to a subscriber,
//! bad files set aside with their reasons, and nothing lost or duplicated when the aggregator or the agent itself
//! is killed midway.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sitrep_proto::v1 as pb;
use sitrep_store::redis::RedisProcess;
use tokio::process::{Child, Command};

use crate::support::*;

fn agent(server: &str, drop: &Path, spool: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["feed", "--server", server, "--poll-ms", "50", "--watch"])
        .arg(drop)
        .arg("--spool")
        .arg(spool)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start sitrep feed")
}

/// Events (not heartbeats) until `n` have arrived, failing the test if they take longer than `limit`.
async fn events_within(stream: &mut tonic::Streaming<pb::Update>, n: usize, limit: Duration) -> Vec<pb::Event> {
    let mut out = Vec::new();
    let collect = async {
        while out.len() < n {
            match next(stream).await {
                pb::update::Kind::Event(e) => out.push(e),
                pb::update::Kind::Heartbeat(_) | pb::update::Kind::Status(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    if tokio::time::timeout(limit, collect).await.is_err() {
        panic!(
            "only {} of {n} events within {limit:?}: {:?}",
            out.len(),
            out.iter().map(|e| &e.narrative).collect::<Vec<_>>()
        );
    }
    out
}

async fn events(stream: &mut tonic::Streaming<pb::Update>, n: usize) -> Vec<pb::Event> {
    events_within(stream, n, DEADLINE).await
}

fn value(e: &pb::Event, metric: &str) -> Option<pb::metric_value::Kind> {
    e.changes.iter().find(|c| c.metric == metric).and_then(|c| c.after.as_ref()).and_then(|v| v.kind)
}

/// Each format, dropped in the folder, reaches a subscriber; a file that cannot be read and a report the
/// aggregator rejects are set aside with their reasons while the good ones arrive.
#[tokio::test]
async fn every_format_arrives_and_bad_files_are_set_aside() {
    let server = Server::start("").await;
    let mut watch = server.updates(1).await;
    expect_snapshot(next(&mut watch).await);
    let dir = temp_dir("feed");
    let folder = dir.path().join("drop");
    std::fs::create_dir_all(&folder).unwrap();
    let mapping = dir.path().join("trust.toml");
    std::fs::write(
        &mapping,
        "source = \"e2e exports\"\n[providers]\nSTG = \"RJ7\"\n[columns]\n\"ICU open\" = \"beds.cc_adult.open\"\n\
         \"ICU occupied\" = \"beds.cc_adult.occupied\"\n[absent]\n\"N/A\" = \"not_applicable\"\n\
         [fhir.subjects]\n\"Organization/guys\" = \"RGN\"\n\"Organization/kings\" = \"RGM\"\n",
    )
    .unwrap();
    let hour = sitrep_core::Timestamp::now().hour_start().to_string();
    let files = [
        (
            "1-sitrep.json",
            format!(
                r#"{{"provider":"RAL","period":"{hour}","values":{{"ed.in_department":41,"ed.over_12h":{{"absent":"suppressed"}}}}}}"#
            ),
        ),
        ("2-wide.csv", "Provider,ICU open,ICU occupied,ed.over_12h\nSTG,28,25,N/A\n".to_owned()),
        ("3-long.csv", "provider,metric,value\nRGT,flow.discharges,17\nRGT,ed.in_department,30\n".to_owned()),
        (
            "4-fhir.json",
            format!(
                r#"{{"resourceType":"MeasureReport","subject":{{"reference":"Organization/guys"}},"period":{{"start":"{hour}"}},
                "group":[{{"population":[{{"code":{{"coding":[{{"code":"numICUBeds"}}]}},"count":40}},
                {{"code":{{"coding":[{{"code":"numICUBedsOcc"}}]}},"_count":{{"extension":[{{"url":"http://hl7.org/fhir/StructureDefinition/data-absent-reason","valueCode":"unknown"}}]}}}}]}}]}}"#
            ),
        ),
        (
            "5-bundle.json",
            format!(
                r#"{{"resourceType":"Bundle","entry":[{{"resource":{{"resourceType":"MeasureReport","reporter":{{"reference":"Organization/kings"}},
                "period":{{"start":"{hour}"}},"group":[{{"population":[{{"code":{{"coding":[{{"code":"numVent"}}]}},"count":12}}]}}]}}}}]}}"#
            ),
        ),
        ("6-bad.csv", "provider,beds.cc_adult.open\nRJ7,lots\n".to_owned()),
        (
            "7-bad-fhir.json",
            format!(
                r#"{{"resourceType":"MeasureReport","subject":{{"reference":"Organization/guys"}},"period":{{"start":"{hour}"}},"group":[{{"population":[{{"code":{{"coding":[{{"code":"numICUBeds"}}]}},"count":"forty"}}]}}]}}"#
            ),
        ),
        ("8-unknown-provider.json", r#"{"provider":"XYZ","values":{"ed.in_department":1}}"#.to_owned()),
    ];
    for (name, text) in &files {
        std::fs::write(folder.join(name), text).unwrap();
    }
    let _agent = agent(&server.url, &folder, &dir.path().join("spool"), &["--mapping", mapping.to_str().unwrap()]);

    let got = events(&mut watch, 5).await;
    let by: std::collections::BTreeMap<&str, &pb::Event> = got.iter().map(|e| (e.provider.as_str(), e)).collect();
    use pb::metric_value::Kind::{Absent, Number};
    assert_eq!(value(by["RAL"], "ed.in_department"), Some(Number(41.0)));
    assert_eq!(value(by["RAL"], "ed.over_12h"), Some(Absent(pb::AbsentReason::Suppressed as i32)));
    assert_eq!(value(by["RJ7"], "beds.cc_adult.occupied"), Some(Number(25.0)), "mapped column and provider");
    assert_eq!(value(by["RJ7"], "ed.over_12h"), Some(Absent(pb::AbsentReason::NotApplicable as i32)));
    assert_eq!(value(by["RGT"], "flow.discharges"), Some(Number(17.0)));
    assert_eq!(value(by["RGN"], "beds.cc_adult.open"), Some(Number(40.0)));
    assert_eq!(
        value(by["RGN"], "beds.cc_adult.occupied"),
        Some(Absent(pb::AbsentReason::NotAvailable as i32)),
        "absent, not zero"
    );
    assert_eq!(value(by["RGM"], "ventilators.total"), Some(Number(12.0)));
    assert_eq!(by["RJ7"].source, "e2e exports");

    let rejected = folder.join("rejected");
    let reason = |name: &str| {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(text) = std::fs::read_to_string(rejected.join(name)) {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "no {name} in rejected/");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(reason("6-bad.csv.reason.txt").contains("6-bad.csv:2: column \"beds.cc_adult.open\": value \"lots\""));
    let fhir = reason("7-bad-fhir.json.reason.txt");
    assert!(fhir.contains("$.group[0].population[0].count: expected a number"), "{fhir}");
    let listing: Vec<String> =
        std::fs::read_dir(&rejected).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let deadline = std::time::Instant::now() + DEADLINE;
    while !std::fs::read_dir(&rejected).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().ends_with("reason.txt")
            && e.file_name().to_string_lossy().starts_with("8-unknown")
    }) {
        assert!(std::time::Instant::now() < deadline, "the aggregator's rejection is set aside: {listing:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let processed: Vec<String> = std::fs::read_dir(folder.join("processed"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(processed.len(), 6, "{processed:?}");
    // Nothing more arrives (no report twice).
    let extra = async {
        loop {
            if let pb::update::Kind::Event(e) = next(&mut watch).await {
                return e;
            }
        }
    };
    if let Ok(e) = tokio::time::timeout(Duration::from_millis(1500), extra).await {
        panic!("an unexpected event: {e:?}");
    }
}

/// 1,000 reports from 100 files. The aggregator is killed while they are being sent and restarted; later the
/// agent itself is killed (SIGKILL) and restarted. A subscriber (on another replica) sees every report exactly
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reports_survive_killing_the_aggregator_and_the_agent() {
    let redis = RedisProcess::start().expect("redis-server");
    let addr = free_addr();
    let aggregator = Server::start_full("", &["--redis", &redis.url()], &addr, &[]).await;
    let observer = Server::start_redis(&redis.url()).await;
    let mut watch = observer.updates(1).await;
    expect_snapshot(next(&mut watch).await);

    let dir = temp_dir("feed-kill");
    let folder = dir.path().join("drop");
    std::fs::create_dir_all(&folder).unwrap();
    let providers =
        ["RJ7", "RVR", "RAX", "RJ6", "RQY", "RAL", "RAP", "RKE", "RP4", "RRV", "RGT", "RGP", "RGN", "RCX", "RM1"];
    for f in 0..100 {
        let reports: Vec<String> = (0..10)
            .map(|i| {
                let n = f * 10 + i;
                format!(
                    r#"{{"provider":"{}","values":{{"flow.discharges":{n}}},"narrative":"report {n}"}}"#,
                    providers[n % providers.len()]
                )
            })
            .collect();
        std::fs::write(folder.join(format!("{f:03}.json")), format!("[{}]", reports.join(","))).unwrap();
    }
    let spool = dir.path().join("spool");
    let server_url = format!("http://{addr}");
    let mut feed = agent(&server_url, &folder, &spool, &[]);

    let mut seen = events(&mut watch, 250).await;
    // The aggregator goes down while the agent is sending (reports are still waiting in its spool).
    let waiting = |spool: &Path| std::fs::read_dir(spool.join("queue")).map(|d| d.count()).unwrap_or(0);
    assert!(waiting(&spool) > 0, "the agent is mid-way");
    drop(aggregator);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _restarted = Server::start_full("", &["--redis", &redis.url()], &addr, &[]).await;
    seen.extend(events(&mut watch, 600 - seen.len()).await);
    // The agent itself is killed outright (SIGKILL), mid-stream.
    assert!(waiting(&spool) > 0, "the agent is mid-way");
    feed.start_kill().unwrap();
    feed.wait().await.unwrap();
    let _feed = agent(&server_url, &folder, &spool, &[]);
    let deadline = DEADLINE * 3;
    seen.extend(
        tokio::time::timeout(deadline, events(&mut watch, 1000 - seen.len())).await.expect("all 1,000 in time"),
    );
    // And nothing after: no report arrived twice.
    let extra = tokio::time::timeout(Duration::from_secs(2), events(&mut watch, 1)).await;
    assert!(extra.is_err(), "an event beyond the 1,000: {:?}", extra.unwrap());
    let narratives: Vec<String> = seen.iter().map(|e| e.narrative.clone()).collect();
    let expected: Vec<String> = (0..1000).map(|n| format!("report {n}")).collect();
    assert_eq!(narratives, expected, "every report exactly once, in order");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["feed", "--status", "--spool"])
        .arg(&spool)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("0 report(s) waiting"), "{text}");
}

/// One-shot use: a file, or standard input, is sent and the agent exits once it is acknowledged; `--status` then
/// shows the last acknowledgement.
#[tokio::test]
async fn one_shot_files_and_standard_input() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start("").await;
    let mut watch = server.updates(1).await;
    expect_snapshot(next(&mut watch).await);
    let dir = temp_dir("feed-once");
    let file = dir.path().join("beds.json");
    std::fs::write(&file, r#"{"provider":"RM1","values":{"beds.cc_adult.open":9}}"#).unwrap();
    let spool = dir.path().join("spool");
    let out = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["feed", "--server", &server.url, "--spool"])
        .arg(&spool)
        .arg(&file)
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap();
    // What the agent did is logged (standard error), as everything the agent says is.
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stdout));
    assert!(text.contains("accepted RM1"), "{text}");
    assert_eq!(events(&mut watch, 1).await[0].provider, "RM1");

    let mut child = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["feed", "--format", "csv", "--server", &server.url, "--spool"])
        .arg(&spool)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"provider,metric,value\nRMY,ed.in_department,12\n").await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let e = events(&mut watch, 1).await.remove(0);
    assert_eq!(
        (e.provider.as_str(), value(&e, "ed.in_department")),
        ("RMY", Some(pb::metric_value::Kind::Number(12.0)))
    );
    let status = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["feed", "--status", "--spool"])
        .arg(&spool)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("0 report(s) waiting") && text.contains("last acknowledged: accepted RMY"), "{text}");
}

/// A trust's export as Excel-minded systems write it: Windows-1252 (`£`, `é`), separated by `;`, times in UK
/// local time with no zone. With `encoding`, `delimiter` and `timezone` in the mapping it arrives intact (and the
/// server's address without a scheme is taken as http://); without the mapping, the file is set aside with the
/// line and byte named and the mapping key to set.
#[tokio::test]
async fn a_windows_1252_semicolon_csv_in_local_time_arrives_with_its_mapping() {
    let server = Server::start("").await;
    let mut watch = server.updates(1).await;
    expect_snapshot(next(&mut watch).await);
    let dir = temp_dir("feed-cp1252");
    // This hour as London's clocks show it, with no zone: whichever of UTC+0 and UTC+1 London is on now.
    let hour = sitrep_core::Timestamp::now().hour_start();
    let london = sitrep_core::input::Mapping::default().timezone;
    let local = [0, 1]
        .into_iter()
        .map(|h| hour.add_hours(h).to_string().replace('T', " ")[..16].to_owned())
        .find(|text| sitrep_core::input::parse_time(text, &london) == Some(hour))
        .expect("London is on UTC+0 or UTC+1");
    let mut csv = format!("provider;period;ICU open;narrative\nRJ7;{local};14;").into_bytes();
    csv.extend_from_slice(b"\"Caf\xE9 closed; \xA3 appeal\"\n");
    let file = dir.path().join("export.csv");
    std::fs::write(&file, &csv).unwrap();
    let mapping = dir.path().join("trust.toml");
    std::fs::write(
        &mapping,
        "encoding = \"windows-1252\"\ndelimiter = \";\"\ntimezone = \"Europe/London\"\n\
         [columns]\n\"ICU open\" = \"beds.cc_adult.open\"\n",
    )
    .unwrap();
    let feed = |extra: &[&str], spool: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sitrep"));
        command
            .args(["feed", "--server", server.url.trim_start_matches("http://"), "--spool"])
            .arg(dir.path().join(spool))
            .args(extra)
            .arg(&file);
        command
    };
    let out = feed(&["--mapping", mapping.to_str().unwrap()], "spool").output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let e = events(&mut watch, 1).await.remove(0);
    assert_eq!(
        (e.provider.as_str(), value(&e, "beds.cc_adult.open")),
        ("RJ7", Some(pb::metric_value::Kind::Number(14.0)))
    );
    assert_eq!(e.narrative, "Café closed; £ appeal");
    assert_eq!(e.period.map(|p| p.seconds * 1000), Some(hour.millis()), "local {local} is {hour}");

    // Without the mapping: not UTF-8, set aside saying where and what to set.
    let out = feed(&[], "spool-2").output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    let reason = std::fs::read_to_string(dir.path().join("spool-2/rejected/export.csv.reason.txt")).unwrap();
    assert!(
        reason.starts_with("export.csv:2: byte 0xE9 at column ")
            && reason.contains("is not UTF-8 text (rule: utf8)")
            && reason.contains("encoding = \"windows-1252\""),
        "{reason}"
    );
}

/// Something listening on a port that answers, but not with HTTP/2: what `--server` pointing at the wrong
/// service looks like. It reads what it is sent and answers an HTTP/1 error, keeping the connection open.
pub(crate) async fn not_sitrep() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    (addr, task)
}

/// `push` and `feed` tell a bad address, nothing listening, and a service that is not sitrep apart, and `feed`
/// stops (non-zero, the reports kept in the spool) rather than retrying for ever on a configuration error.
#[tokio::test]
async fn push_and_feed_tell_refused_not_sitrep_and_bad_addresses_apart() {
    let server = Server::start("").await;
    let dir = temp_dir("feed-addr");
    let file = dir.path().join("r.json");
    std::fs::write(&file, r#"{"provider":"RM1","values":{"beds.cc_adult.open":9}}"#).unwrap();
    let refused = free_addr();
    let (other, _other) = not_sitrep().await;
    let run = |args: Vec<String>| {
        let file = file.clone();
        async move {
            let out = tokio::time::timeout(
                Duration::from_secs(60),
                Command::new(env!("CARGO_BIN_EXE_sitrep")).args(&args).arg(&file).env("RUST_LOG", "info").output(),
            )
            .await
            .unwrap_or_else(|_| panic!("sitrep {args:?} did not finish: retrying for ever?"))
            .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.code(), text)
        }
    };
    let push = |server: &str| vec!["push".to_owned(), "--server".to_owned(), server.to_owned()];
    let spool = dir.path().join("spool").display().to_string();
    let feed = |server: &str| ["feed", "--server", server, "--spool", &spool].map(str::to_owned).to_vec();
    let no_scheme = server.url.trim_start_matches("http://");
    // (arguments, exit code, what the output must say)
    let cases = [
        (push(no_scheme), 0, "accepted: RM1".to_owned()),
        (push(&refused), 1, format!("connection refused at {refused}: nothing is listening there")),
        // Answered with a protocol error, or (the HTTP/2 client's race) closed: either way, not sitrep.
        (push(&other), 1, "not a sitrep aggregator".to_owned()),
        (push("127.0.0.1:99999"), 1, "--server \"127.0.0.1:99999\": port \"99999\" is not a port number".to_owned()),
        // TLS to an aggregator that serves plaintext: said so, never sent in the clear instead.
        (push(&format!("https://{no_scheme}")), 1, "did not answer in TLS".to_owned()),
        (feed("127.0.0.1:99999"), 1, "port \"99999\" is not a port number".to_owned()),
        (feed(&other), 1, "not a sitrep aggregator".to_owned()),
    ];
    for (args, code, expected) in cases {
        let (got, text) = run(args.clone()).await;
        assert_eq!(got, Some(code), "{args:?}: {text}");
        assert!(text.contains(&expected), "{args:?}: {text}\nshould say {expected:?}");
    }
    // The feed that stopped kept its report for when --server is right.
    let (code, text) = run(feed(no_scheme)).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("accepted RM1") || text.contains("duplicate RM1"), "{text}");
}

/// The feed agent authenticates with its key: a report for a provider outside its grant is set aside in rejected/
/// with the aggregator's reason, and the rest arrive; without an accepted credential it keeps its spool and says
/// what to renew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_outside_the_agents_grant_is_set_aside_and_a_refused_key_keeps_the_spool() {
    use tokio::io::AsyncBufReadExt;
    let key = |args: &'static [&'static str]| async move {
        let out = Command::new(env!("CARGO_BIN_EXE_sitrep")).arg("key").args(args).output().await.unwrap();
        let lines = String::from_utf8(out.stderr).unwrap().split_once("\n\n").unwrap().1.to_owned();
        (String::from_utf8(out.stdout).unwrap().trim().to_owned(), lines)
    };
    let (feed_key, feed_lines) = key(&["--name", "RJ7 feed", "--write", "RJ7"]).await;
    let (reader, reader_lines) = key(&["--name", "reader", "--read", "*"]).await;
    let principals = format!("{feed_lines}\n{reader_lines}");
    let server =
        Server::start_full("[auth]\nprincipals = \"p.toml\"\n", &[], "127.0.0.1:0", &[("p.toml", &principals)]).await;
    let dir = temp_dir("feed-grant");
    let (folder, spool) = (dir.path().join("drop"), dir.path().join("spool"));
    std::fs::create_dir_all(&folder).unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, &feed_key).unwrap();
    let _agent = agent(&server.url, &folder, &spool, &["--key-file", key_file.to_str().unwrap()]);
    std::fs::write(folder.join("beds.csv"), "provider,ed.over_12h\nRGT,4\nRJ7,3\n").unwrap();
    let rejected = folder.join("rejected");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let text = loop {
        let found = std::fs::read_dir(&rejected)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".reason.txt"));
        if let Some(f) = found {
            break std::fs::read_to_string(f.path()).unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "no reason in rejected/");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("permission denied") && text.contains("provider RGT"), "{text}");
    // RJ7's report, behind it in the same file, arrived.
    let bearer = sitrep_client::credentials::Bearer::new(&reader).unwrap();
    let channel = sitrep_client::credentials::authed(server.channel().await, bearer);
    let mut query = sitrep_proto::v1::query_service_client::QueryServiceClient::new(channel);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let request = pb::GetHistoryRequest { provider: "RJ7".into(), ..Default::default() };
        match query.get_history(request).await {
            Ok(h) if !h.get_ref().entries.is_empty() => break,
            _ if tokio::time::Instant::now() > deadline => panic!("RJ7's report did not arrive"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    // Without an accepted key: the agent says what to renew, never echoing the key, and keeps its spool.
    let dir2 = temp_dir("feed-nokey");
    let (folder2, spool2) = (dir2.path().join("drop"), dir2.path().join("spool"));
    std::fs::create_dir_all(&folder2).unwrap();
    std::fs::write(folder2.join("beds.csv"), "provider,ed.over_12h\nRJ7,5\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["feed", "--server", &server.url, "--spool"])
        .arg(&spool2)
        .arg(folder2.join("beds.csv"))
        .env("SITREP_KEY", "sitrep_revoked")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !said.contains("renew") {
        let line = tokio::select! {
            l = out.next_line() => l,
            l = err.next_line() => l,
            _ = tokio::time::sleep_until(deadline) => panic!("the agent did not say what to renew: {said}"),
        };
        match line.unwrap() {
            Some(l) => said.push_str(&l),
            None => break,
        }
    }
    assert!(said.contains("does not accept this agent's credential") && said.contains("the spool is kept"), "{said}");
    assert!(!said.contains("sitrep_revoked"), "the key is never echoed: {said}");
    drop(child);
    let status =
        Command::new(env!("CARGO_BIN_EXE_sitrep")).args(["feed", "--status", "--spool"]).arg(&spool2).output().await;
    let kept = String::from_utf8_lossy(&status.unwrap().stdout).into_owned();
    assert!(kept.contains("1 report"), "the spool is kept: {kept}");
}

//! A real browser for the tests: headless Chromium driven over the Chrome DevTools Protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by a NUL byte, commands on file descriptor 3, answers on 4),
//! so neither WebDriver nor a WebSocket library is needed.
//!
//! The calls block (the browser is another process; nothing of the test's own needs to run meanwhile), so tests
//! using it run on the multi-threaded runtime.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DEADLINE, TempDir, temp_dir};

pub struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    answers: mpsc::Receiver<Value>,
    next_id: u64,
    _profile: TempDir,
}

/// A tab, attached with its own session.
pub struct Page {
    session: String,
}

fn chromium() -> String {
    if let Ok(path) = std::env::var("SITREP_CHROMIUM") {
        return path;
    }
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
            .unwrap_or(false);
        if found {
            return name.to_owned();
        }
    }
    panic!("no Chromium found: install Debian's `chromium` package (./scripts/test does), or set SITREP_CHROMIUM");
}

impl Browser {
    pub fn launch() -> Browser {
        let profile = temp_dir("chromium");
        let (commands_r, commands_w) = std::io::pipe().unwrap();
        let (answers_r, answers_w) = std::io::pipe().unwrap();
        // Chromium's --remote-debugging-pipe reads commands on fd 3 and writes answers on fd 4. A shell places the
        // pipe ends there (given as its stdin and stdout, then pointed back at /dev/null) and becomes Chromium, so no
        // code runs between fork and exec here and the tests need no `unsafe`.
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "exec 3<&0 4>&1 </dev/null >/dev/null; exec \"$0\" \"$@\"", &chromium()]);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-pipe",
            "--window-size=1920,1080",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::from(commands_r))
        .stdout(Stdio::from(answers_w))
        .stderr(Stdio::null());
        let child = cmd.spawn().expect("start chromium");
        // The parent's copies of the child's ends went into `cmd` and are closed with it, so the answers pipe ends
        // when Chromium exits.
        drop(cmd);
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(answers_r);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        buf.pop();
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                            && tx.send(v).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        Browser { child, commands: commands_w, answers, next_id: 1, _profile: profile }
    }

    /// Sends a command (to a page's session when given) and returns its result.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self.answers.recv_timeout(left).unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if answer["id"] == json!(id) {
                if let Some(e) = answer.get("error") {
                    panic!("chromium: {method} failed: {e}");
                }
                return answer["result"].clone();
            }
        }
    }

    /// Opens a tab at `url`, 1920 x 1080.
    pub fn open(&mut self, url: &str) -> Page {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = self.call(None, "Target.attachToTarget", json!({ "targetId": target, "flatten": true }));
        let session = attached["sessionId"].as_str().expect("a session id").to_owned();
        let s = Some(session.as_str());
        self.call(
            s,
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": false }),
        );
        self.call(s, "Page.navigate", json!({ "url": url }));
        Page { session }
    }

    /// Makes the page `width` x `height` CSS pixels (a resize, as a screen of that size would show it).
    pub fn set_viewport(&mut self, page: &Page, width: u32, height: u32) {
        self.call(
            Some(&page.session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
    }

    /// Evaluates a JavaScript expression in the page and returns its value (promises awaited).
    pub fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let r = self.call(
            Some(&page.session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` every 10 ms until it is truthy; returns how long that took, or panics after `limit`.
    pub fn wait_for(&mut self, page: &Page, expression: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let v = self.eval(
                page,
                &format!("(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"),
            );
            if v == json!(true) {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "the page did not show `{expression}` within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A PNG of what the page shows.
    pub fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        let r = self.call(Some(&page.session), "Page.captureScreenshot", json!({ "format": "png" }));
        base64(r["data"].as_str().expect("screenshot data"))
    }
}

impl Drop for Browser {
    /// Asks Chromium to close (it then ends its own helper processes; a kill alone leaves them writing into the
    /// profile, which then outlives the test), and kills it if it has not gone within two seconds.
    fn drop(&mut self) {
        let close = json!({ "id": self.next_id, "method": "Browser.close", "params": {} });
        let mut bytes = serde_json::to_vec(&close).unwrap();
        bytes.push(0);
        if self.commands.write_all(&bytes).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

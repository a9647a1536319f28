//! `RedisProcess`: a real `redis-server` started on a free loopback port with its own data directory.
//!
//! Tests and the benchmark use it so that each owns its Redis: nothing shared, nothing left behind. It runs with
//! AOF persistence (`appendfsync always`, so a killed server loses nothing it acknowledged) and can be killed and
//! restarted on the same port and data to exercise outages. It can also run as a replica of another
//! (`--replicaof`) or as a Redis Sentinel watching a master, for failover tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisProcess {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    config: Option<PathBuf>,
    sentinel: bool,
}

/// What a Sentinel started by [`RedisProcess::start_sentinel`] watches, and how quickly it acts.
pub struct SentinelWatch<'a> {
    /// The name the master is monitored under.
    pub name: &'a str,
    pub master_port: u16,
    /// Sentinels that must agree the master is down.
    pub quorum: u32,
    /// How long the master must be unreachable before it counts as down.
    pub down_after_ms: u64,
    pub failover_timeout_ms: u64,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl RedisProcess {
    /// Starts `redis-server` on a free port with a new data directory under the system's temp directory.
    pub fn start() -> std::io::Result<Self> {
        Self::launch(Vec::new(), None)
    }

    /// Like [`RedisProcess::start`], with extra `redis-server` arguments that override the defaults, e.g.
    /// `["--appendfsync", "everysec"]`.
    pub fn start_with(extra: &[&str]) -> std::io::Result<Self> {
        Self::launch(extra.iter().map(|s| s.to_string()).collect(), None)
    }

    /// Starts `redis-server` with a configuration file (its port, data directory and persistence are then set for
    /// the test, everything else comes from the file).
    pub fn start_with_config(config: &Path) -> std::io::Result<Self> {
        Self::launch(Vec::new(), Some(config.to_owned()))
    }

    /// Starts `redis-server` as a replica of `master` (`--replicaof`), with the same defaults.
    pub fn start_replica_of(master: &RedisProcess) -> std::io::Result<Self> {
        Self::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()])
    }

    /// Starts a Redis Sentinel (`redis-server --sentinel`) watching a master on loopback, with a sentinel.conf of
    /// its own (Sentinel rewrites it as it learns of replicas, other Sentinels and failovers).
    pub fn start_sentinel(watch: &SentinelWatch<'_>) -> std::io::Result<Self> {
        let dir = Self::new_dir()?;
        let name = watch.name;
        let config = dir.join("sentinel.conf");
        let text = format!(
            "sentinel monitor {name} 127.0.0.1 {} {}\nsentinel down-after-milliseconds {name} {}\n\
             sentinel failover-timeout {name} {}\nsentinel parallel-syncs {name} 1\n",
            watch.master_port, watch.quorum, watch.down_after_ms, watch.failover_timeout_ms
        );
        std::fs::write(&config, text)?;
        let mut p = RedisProcess {
            child: None,
            port: free_port()?,
            dir,
            extra: Vec::new(),
            config: Some(config),
            sentinel: true,
        };
        p.spawn()?;
        Ok(p)
    }

    fn new_dir() -> std::io::Result<PathBuf> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sitrep-redis-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn launch(extra: Vec<String>, config: Option<PathBuf>) -> std::io::Result<Self> {
        let dir = Self::new_dir()?;
        let mut p = RedisProcess { child: None, port: free_port()?, dir, extra, config, sentinel: false };
        p.spawn()?;
        Ok(p)
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut command = Command::new("redis-server");
        // A configuration file must come first; the arguments after it override it.
        if let Some(config) = &self.config {
            command.arg(config);
        }
        if self.sentinel {
            command.arg("--sentinel");
        } else {
            command.args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"]);
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start redis-server (is it installed?): {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ping(self.port) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!("redis-server exited with {status}: {log}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::other("redis-server did not answer PING within 20 s"))
    }

    /// Sends one command in Redis's inline form (e.g. `CONFIG SET min-replicas-to-write 1`) and returns the first
    /// line of the reply.
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{line}\r\n").as_bytes())?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while s.read(&mut byte)? == 1 && byte[0] != b'\n' {
            reply.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! The Redis store against a real `redis-server` started on a free port with its own data directory.

use sitrep_store::conformance;
use sitrep_store::redis::RedisProcess;
use sitrep_store::{RedisOptions, RedisStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    let redis = RedisProcess::start().expect("start redis-server");
    let url = redis.url();
    // Each check gets a fresh key prefix: as good as a fresh Redis, and it proves prefixes isolate deployments.
    let mut n = 0;
    let make = || {
        n += 1;
        let options = RedisOptions { url: url.clone(), key_prefix: format!("conf{n}"), ..Default::default() };
        async move { RedisStore::connect(options).await.expect("connect") }
    };
    let small = RedisStore::connect(RedisOptions {
        url: url.clone(),
        key_prefix: "small".into(),
        event_log_max_len: 3,
        ..Default::default()
    });
    conformance::run_all(make, async { small.await.expect("connect") }, 3).await;
}

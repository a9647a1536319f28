//! The version of sitrep's data layout in Redis, and the upgrades from one version to the next.
//!
//! `{prefix}:schema` holds the layout's version, an integer ([`VERSION`] is what this build writes: the keys listed
//! in the header of [`super`]). Before a store first uses Redis it runs [`prepare`]:
//! - no data at all: the key is set to [`VERSION`];
//! - data but no key (written before versions were kept): that is version 0, the layout of version 1 unmarked, and
//!   the 0 -> 1 migration only stamps it;
//! - an older version: the migrations from it up to [`VERSION`] run, in order, each followed by setting the key to
//!   the version it reached, so an upgrade interrupted half way resumes where it stopped;
//! - a newer version: refused ([`StoreError::Incompatible`]), with a message naming the key, both versions and what
//!   to do. An older sitrep must never write a layout it does not know.
//!
//! **One migrator.** Migrations run under a lock (`{prefix}:schema:lock`, `SET NX PX`, released only by its
//! holder), so replicas starting together do not migrate twice: the others wait for the key to reach
//! [`VERSION`]. The lock expires if its holder dies, so each migration must be safe to run again from the start.
//!
//! **Adding a migration** (when a release changes the layout): raise [`VERSION`] to n + 1, append a [`Migration`]
//! `{ from: n, .. }` to [`MIGRATIONS`] whose `run` rewrites version n's keys into version n + 1's (idempotently,
//! in bounded batches: `SCAN`/`HSCAN`, never one command over everything), describe the new layout in the header of
//! [`super`] and in docs/ARCHITECTURE.md, and add a test that loads version n data and reads it back.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;

use sitrep_core::aid::{Request, RequestId};

use super::codec::{self, aid_ref_field};
use super::{Keys, unavailable};
use crate::StoreError;

/// The layout this build reads and writes. Version 2 added mutual aid (the `aid` hash, holds in states, events of
/// kind 2); version 3 the index of open references in the `aid` hash: see [`MIGRATIONS`].
pub const VERSION: u32 = 3;

/// An upgrade of the data from version `from` to `from + 1`.
pub(super) struct Migration {
    pub from: u32,
    /// What it changes, for the log.
    pub what: &'static str,
    /// Does it; must be safe to run again after an interruption.
    pub run: for<'a> fn(&'a mut ConnectionManager, &'a Keys) -> BoxFuture<'a, Result<(), StoreError>>,
}

/// Every migration, in order: `MIGRATIONS[i].from == i`.
///
/// 1 -> 2 changes no data: version 1's keys read the same in version 2, which only adds to them (the `aid` hash,
/// holds in a state's field 14, events of kind 2 with an aid change in field 22). The version moves all the same
/// because a version 1 build would misread those additions, not refuse them: it would take an aid event for a
/// report, and drop a state's holds the next time it wrote the state. Stamping 2 makes such a build refuse the data
/// (see [`prepare`]) instead of corrupting it.
///
/// 2 -> 3 builds the index of open references (`ref:<provider>|<reference>` -> `R<n>` in the `aid` hash, see
/// [`super::aid`]) from the requests already there ([`index_open_references`]). A version 2 build would not keep
/// the index when requests end, so it must refuse version 3 data.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration { from: 0, what: "stamp data written before versions were kept (its layout is version 1's)", run: stamp },
    Migration {
        from: 1,
        what: "stamp version 2 (mutual aid: the aid hash, holds in states, aid events), which adds keys and fields \
               and rewrites none, so that older builds refuse what they would misread",
        run: stamp,
    },
    Migration {
        from: 2,
        what: "index the open mutual aid requests by provider and reference in the aid hash (ref:<provider>|<reference>)",
        run: index_open_references,
    },
];

/// How many fields of the `aid` hash one `HSCAN` step asks for while indexing.
const INDEX_BATCH: usize = 500;

/// 2 -> 3: reads the `aid` hash in `HSCAN` batches and sets, for each request that has not ended, its index entry.
/// Where an older book has two open requests with one reference (before retried creates were recognised), the
/// entry names the lower id, the one the whole book's [`AidBook::open_with_reference`] finds. Setting the same
/// entries again is harmless, so an interrupted run is simply run again.
///
/// [`AidBook::open_with_reference`]: sitrep_core::aid::AidBook::open_with_reference
fn index_open_references<'a>(conn: &'a mut ConnectionManager, keys: &'a Keys) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(async move {
        let key = &keys.aid;
        // Only the open requests' entries are held, never the book.
        let mut open: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        super::scan_hash(conn, key, INDEX_BATCH, unavailable, |pairs| {
            for (field, value) in pairs {
                if !field.starts_with('R') {
                    continue;
                }
                let request: Request = codec::from_json(&format!("{key} field {field} (indexing)"), &value)?;
                if !request.state.is_closed() {
                    let entry = open
                        .entry(aid_ref_field(&request.ask.provider, &request.ask.reference))
                        .or_insert(request.id.0);
                    *entry = (*entry).min(request.id.0);
                }
            }
            Ok(())
        })
        .await?;
        let entries: Vec<(String, String)> =
            open.into_iter().map(|(field, id)| (field, RequestId(id).to_string())).collect();
        for batch in entries.chunks(INDEX_BATCH) {
            let _: () = redis::cmd("HSET").arg(key).arg(batch).query_async(conn).await.map_err(unavailable)?;
        }
        Ok(())
    })
}

fn stamp<'a>(_: &'a mut ConnectionManager, _: &'a Keys) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(async { Ok(()) })
}

/// How long a migrator holds the lock without finishing before another may take over.
const LOCK_FOR: Duration = Duration::from_secs(60);
/// How often a replica waiting for another's migration looks again.
const WAIT_STEP: Duration = Duration::from_millis(100);

/// The version of the data (stamping an empty database with [`VERSION`]); 0 for data written before versions.
const READ_VERSION: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return tonumber(v) end
if redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  return tonumber(ARGV[1])
end
return 0
";

/// Deletes the lock if this migrator still holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Checks the data's version and upgrades it with `migrations` to the newest they reach (see the module's header);
/// returns the version the data is at.
pub(super) async fn prepare(
    conn: &ConnectionManager,
    keys: &Keys,
    migrations: &[Migration],
) -> Result<u32, StoreError> {
    let newest = migrations.last().map_or(VERSION, |m| m.from + 1).max(VERSION);
    let mut conn = conn.clone();
    let found = read_version(&mut conn, keys, newest).await?;
    if found > newest {
        return Err(newer(keys, found, newest));
    }
    if found == newest {
        return Ok(found);
    }
    let token = crate::new_epoch('m');
    let lock = format!("{}schema:lock", keys.prefix);
    let deadline = tokio::time::Instant::now() + LOCK_FOR * 2;
    loop {
        let taken: Option<String> = redis::cmd("SET")
            .arg(&lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_FOR.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if taken.is_some() {
            let migrated = migrate(&mut conn, keys, migrations, newest).await;
            let _: i64 =
                redis::Script::new(UNLOCK).key(&lock).arg(&token).invoke_async(&mut conn).await.map_err(unavailable)?;
            return migrated;
        }
        // Another replica is migrating: wait for it to finish (or for its lock to expire, then take over).
        tokio::time::sleep(WAIT_STEP).await;
        let now = read_version(&mut conn, keys, newest).await?;
        if now > newest {
            return Err(newer(keys, now, newest));
        }
        if now == newest {
            return Ok(now);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(StoreError::Unavailable {
                message: format!("redis: another aggregator has held {lock} for too long while upgrading the data"),
                source: None,
            });
        }
    }
}

async fn read_version(conn: &mut ConnectionManager, keys: &Keys, newest: u32) -> Result<u32, StoreError> {
    redis::Script::new(READ_VERSION)
        .key(&keys.schema)
        .key(&keys.log)
        .key(&keys.events)
        .key(&keys.states)
        .key(&keys.codes)
        .key(&keys.aid)
        .arg(newest)
        .invoke_async(conn)
        .await
        .map_err(unavailable)
}

/// Runs the migrations from the data's version (read again under the lock) to `newest`.
async fn migrate(
    conn: &mut ConnectionManager,
    keys: &Keys,
    migrations: &[Migration],
    newest: u32,
) -> Result<u32, StoreError> {
    let mut version = read_version(conn, keys, newest).await?;
    while version < newest {
        let m = migrations
            .iter()
            .find(|m| m.from == version)
            .ok_or_else(|| StoreError::Internal(format!("{}: no migration from version {version}", keys.schema)))?;
        tracing::warn!(key = %keys.schema, from = version, to = version + 1, what = m.what, "redis: upgrading the data");
        (m.run)(conn, keys).await?;
        version += 1;
        let _: () = redis::cmd("SET").arg(&keys.schema).arg(version).query_async(conn).await.map_err(unavailable)?;
    }
    Ok(version)
}

fn newer(keys: &Keys, found: u32, newest: u32) -> StoreError {
    StoreError::Incompatible(format!(
        "{} says the data in Redis is of version {found}, written by a newer sitrep; this build knows versions up to \
         {newest}. Upgrade sitrep to the release that wrote it, or point store.key_prefix (or the Redis) elsewhere",
        keys.schema
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::RedisProcess;

    /// A migration that counts its runs, slowly, so that concurrent starts overlap.
    fn counted<'a>(conn: &'a mut ConnectionManager, keys: &'a Keys) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let ran = format!("{}test:ran", keys.prefix);
            let _: i64 = redis::cmd("INCR").arg(ran).query_async(conn).await.map_err(unavailable)?;
            Ok(())
        })
    }

    const FOUR: &[Migration] = &[
        Migration { from: 0, what: "stamp", run: stamp },
        Migration { from: 1, what: "stamp", run: stamp },
        Migration { from: 2, what: "stamp", run: stamp },
        Migration { from: 3, what: "a test migration that counts its runs", run: counted },
    ];

    /// Two replicas starting together on unversioned data: one migrates (each step once), the other waits for it,
    /// and both find the data at the newest version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_run_once_however_many_replicas_start_together() {
        let redis = RedisProcess::start().expect("redis-server");
        let client = redis::Client::open(redis.url()).unwrap();
        let conn = ConnectionManager::new(client).await.unwrap();
        let keys = Keys::new("mig");
        let mut c = conn.clone();
        let _: () = redis::cmd("HSET").arg(&keys.states).arg("RJ7").arg("1|x").query_async(&mut c).await.unwrap();
        let (a, b) = tokio::join!(prepare(&conn, &keys, FOUR), prepare(&conn, &keys, FOUR));
        assert_eq!((a.unwrap(), b.unwrap()), (4, 4));
        let ran: i64 = redis::cmd("GET").arg("{mig}:test:ran").query_async(&mut c).await.unwrap();
        let version: u32 = redis::cmd("GET").arg(&keys.schema).query_async(&mut c).await.unwrap();
        let lock: Option<String> = redis::cmd("GET").arg("{mig}:schema:lock").query_async(&mut c).await.unwrap();
        assert_eq!((ran, version, lock), (1, 4, None), "migrated once, stamped, lock released");
        // Started again: nothing to do.
        assert_eq!(prepare(&conn, &keys, FOUR).await.unwrap(), 4);
        let ran: i64 = redis::cmd("GET").arg("{mig}:test:ran").query_async(&mut c).await.unwrap();
        assert_eq!(ran, 1);
        // The shipped table on the same data: version 4 is newer than this build knows.
        let err = prepare(&conn, &keys, MIGRATIONS).await.unwrap_err().to_string();
        assert!(
            err.contains("{mig}:schema says the data in Redis is of version 4") && err.contains("up to 3"),
            "{err}"
        );
    }
}

//! The file store: one file per session in a directory.
//!
//! Built on the public [`SessionStore`] trait alone, as a user's store would be.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError, Weak,
    },
    thread,
    time::{Duration, SystemTime},
};

use sha2::{Digest, Sha256};

use super::{is_metadata, Emptied, Record, SessionStore};
use crate::{
    error::{StoreError, StoreErrorKind},
    record::millis,
};

/// Lock stripes: a session's writes hold the lock of one of them (chosen by its key), so
/// that writes to different sessions rarely wait for each other.
const STRIPES: usize = 64;

/// Extension of session files; temporary files start with `.tmp-` and lock files live in
/// `.locks/`, so a listing of `*.session` sees sessions only.
const EXTENSION: &str = "session";

/// Temporary files older than this are left over from a crash and swept.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// First bytes of every session file, with the format version.
const MAGIC: &[u8; 5] = b"ARSF\x01";

/// Sessions in files, one per session, in a directory: kemal-session's file engine, for a
/// single machine without Redis. Several processes may share the directory.
///
/// - **Names.** A file is named after the session's storage key (`key_prefix` + the public
///   [handle](crate::Handle), the hex SHA-256 of the id), never the id, so a listing of the
///   directory holds no usable cookie. Characters outside `[A-Za-z0-9_-]` are
///   percent-encoded.
/// - **Atomic writes.** Every change writes a temporary file, `fsync`s it and renames it
///   over the old one: a crash leaves the old record or the new, never a torn one. (The
///   directory is not synced, so a crash can lose the last change.)
/// - **No lost updates.** Field-level changes read, merge and write under a lock (an
///   in-process mutex plus an advisory `flock` on one of 64 lock files in `.locks/`), so
///   concurrent requests, also from other processes, lose nothing.
/// - **Expiry.** A file's expiry is its modification time plus the TTL stored in it:
///   loading a session moves the time (no rewrite). Expired files are never read, and a
///   background thread deletes them every [`gc_interval`](FileStore::gc_interval) (default
///   4 minutes). The thread ends when the last clone of the store is dropped.
/// - **Damage.** A file that is truncated or corrupt (each carries a checksum) is no
///   session: the request gets a fresh one, never an error.
///
/// All file I/O runs on actix's blocking thread pool.
///
/// # Examples
///
/// ```no_run
/// use actix_redis_session::{store::FileStore, Key, RedisSession};
///
/// let store = FileStore::new("/var/lib/myapp/sessions")?;
/// let sessions = RedisSession::builder_with(store, Key::from_env("SESSION_KEY")?).build()?;
/// # drop(sessions);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Per stripe: the in-process lock and the lock file (flock excludes other processes,
    /// and other open descriptions in this one).
    stripes: Vec<Mutex<File>>,
    gc_interval_ms: AtomicU64,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Default interval of the background sweep: 4 minutes.
    pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(240);

    /// Sessions in files under `dir`, which is created (with its parents) if missing, with
    /// permissions `0700` on Unix when created.
    ///
    /// # Errors
    ///
    /// The I/O error when the directory or its lock files cannot be created or opened, or
    /// the sweeper thread cannot be started.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<FileStore> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir)?;
        let locks = dir.join(".locks");
        create_private_dir(&locks)?;
        let stripes = (0..STRIPES)
            .map(|i| {
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(locks.join(format!("{i:02}")))
                    .map(Mutex::new)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let inner = Arc::new(Inner {
            dir,
            stripes,
            gc_interval_ms: AtomicU64::new(millis(Self::DEFAULT_GC_INTERVAL)),
        });
        let weak = Arc::downgrade(&inner);
        thread::Builder::new()
            .name("session-file-gc".into())
            .spawn(move || sweep_until_dropped(&weak))?;
        Ok(FileStore { inner })
    }

    /// How often the background thread deletes expired files (at least every millisecond,
    /// at most every 400 days). Default: [`DEFAULT_GC_INTERVAL`](Self::DEFAULT_GC_INTERVAL).
    /// The change applies at once.
    #[must_use]
    pub fn gc_interval(self, interval: Duration) -> FileStore {
        let interval = interval.clamp(Duration::from_millis(1), crate::config::MAX_LIFETIME);
        self.inner
            .gc_interval_ms
            .store(millis(interval), Ordering::Relaxed);
        self
    }

    /// The directory the sessions are in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Deletes the expired session files (and temporary files left by a crash) now, as the
    /// background thread does; returns how many sessions were deleted.
    ///
    /// # Errors
    ///
    /// The I/O error when the directory cannot be read.
    pub fn sweep(&self) -> io::Result<usize> {
        self.inner.sweep()
    }

    /// Runs `op` on actix's blocking thread pool.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        match actix_web::web::block(move || op(&inner)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(io_error(e)),
            Err(e) => Err(StoreError::new(StoreErrorKind::Unavailable, e.to_string())),
        }
    }
}

impl SessionStore for FileStore {
    async fn load(&self, key: &str, ttl: Option<Duration>) -> Result<Option<Record>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| {
            let path = inner.path(&key);
            let (record, stored) = match read(&path)? {
                Read::Live(record, ttl) => (record, ttl),
                Read::Missing => return Ok(None),
                Read::Dead => {
                    // Deleted now, as Redis does with an expired key it meets, unless a
                    // request has just written it anew.
                    let _guard = inner.lock(&key)?;
                    if !matches!(read(&path)?, Read::Live(..)) {
                        remove_if_present(&path)?;
                    }
                    return Ok(None);
                }
            };
            match ttl {
                // The expiry is the modification time plus the stored TTL: the same TTL
                // needs a new time only (touching a file that a concurrent write just
                // replaced is harmless: the new one is as fresh), another one a rewrite,
                // under the lock.
                Some(ttl) if ttl == stored => touch(&path)?,
                Some(ttl) => {
                    let _guard = inner.lock(&key)?;
                    let Some((record, _)) = read_live(&path)? else {
                        return Ok(None);
                    };
                    inner.write_file(&path, &record, ttl)?;
                    return Ok(Some(record));
                }
                None => {}
            }
            Ok(Some(record))
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        set: &[(String, Vec<u8>)],
        remove: &[String],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (key, set, remove) = (key.to_owned(), set.to_vec(), remove.to_vec());
        self.blocking(move |inner| {
            let _guard = inner.lock(&key)?;
            let path = inner.path(&key);
            let Some((mut record, _)) = read_live(&path)? else {
                return Ok(false);
            };
            record.extend(set);
            for name in &remove {
                record.remove(name);
            }
            inner.write_file(&path, &record, ttl)?;
            Ok(true)
        })
        .await
    }

    async fn create(
        &self,
        key: &str,
        fields: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (key, fields) = (key.to_owned(), fields.to_vec());
        self.blocking(move |inner| {
            let _guard = inner.lock(&key)?;
            let path = inner.path(&key);
            if read_live(&path)?.is_some() {
                return Ok(false);
            }
            inner.write_file(&path, &fields.into_iter().collect(), ttl)?;
            Ok(true)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| {
            let _guard = inner.lock(&key)?;
            let path = inner.path(&key);
            let live = read_live(&path)?.is_some();
            remove_if_present(&path)?;
            Ok(live)
        })
        .await
    }

    async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.load(key, Some(ttl)).await?.is_some())
    }

    async fn empty(
        &self,
        key: &str,
        remove: &[String],
        ttl: Duration,
    ) -> Result<Emptied, StoreError> {
        let (key, remove) = (key.to_owned(), remove.to_vec());
        self.blocking(move |inner| {
            let _guard = inner.lock(&key)?;
            let path = inner.path(&key);
            let Some((mut record, _)) = read_live(&path)? else {
                return Ok(Emptied::Missing);
            };
            for name in &remove {
                record.remove(name);
            }
            if record.keys().any(|name| !is_metadata(name)) {
                inner.write_file(&path, &record, ttl)?;
                Ok(Emptied::Kept)
            } else {
                remove_if_present(&path)?;
                Ok(Emptied::Deleted)
            }
        })
        .await
    }
}

/// Holds a stripe's lock: the in-process mutex, then the file lock.
struct StripeGuard<'a> {
    file: std::sync::MutexGuard<'a, File>,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

impl Inner {
    fn lock(&self, key: &str) -> io::Result<StripeGuard<'_>> {
        let digest = Sha256::digest(key.as_bytes());
        let stripe = usize::from(digest[0]) % STRIPES;
        let file = self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        file.lock()?;
        Ok(StripeGuard { file })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(file_name(key))
    }

    /// Writes `record` to `path` atomically: a temporary file, fsync, rename.
    fn write_file(&self, path: &Path, record: &Record, ttl: Duration) -> io::Result<()> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let temp = self
            .dir
            .join(format!(".tmp-{:016x}", u64::from_be_bytes(nonce)));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            file.write_all(&encode(record, ttl))?;
            file.sync_all()?;
            fs::rename(&temp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn sweep(&self) -> io::Result<usize> {
        let mut deleted = 0;
        for entry in fs::read_dir(&self.dir)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.starts_with(".tmp-") {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age > STALE_TEMP);
                if stale {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            let Some(stem) = name
                .strip_suffix(EXTENSION)
                .and_then(|n| n.strip_suffix('.'))
            else {
                continue;
            };
            let Some(key) = decode_name(stem) else {
                continue;
            };
            if matches!(read_live(&path), Ok(Some(_))) {
                continue;
            }
            // Checked again under the lock: a request may have created it anew meanwhile.
            let _guard = self.lock(&key)?;
            if !matches!(read_live(&path), Ok(Some(_))) && fs::remove_file(&path).is_ok() {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

impl FileStore {
    /// Up to `count` storage keys of live-looking session files that start with `prefix`,
    /// read on from `dir` (a listing started by the first call: `None`); the listing to go
    /// on with, `None` at its end. Memory stays bounded by `count`, whatever the number of
    /// files.
    pub(crate) async fn keys_page(
        &self,
        dir: Option<fs::ReadDir>,
        prefix: String,
        count: usize,
    ) -> Result<(Vec<String>, Option<fs::ReadDir>), StoreError> {
        self.blocking(move |inner| {
            let mut dir = match dir {
                Some(dir) => dir,
                None => fs::read_dir(&inner.dir)?,
            };
            let mut keys = Vec::new();
            while keys.len() < count {
                let Some(entry) = dir.next() else {
                    return Ok((keys, None));
                };
                let Ok(entry) = entry else { continue };
                let name = entry.file_name();
                let key = name
                    .to_str()
                    .and_then(|name| name.strip_suffix(EXTENSION)?.strip_suffix('.'))
                    .and_then(decode_name);
                if let Some(key) = key.filter(|key| key.starts_with(&prefix)) {
                    keys.push(key);
                }
            }
            Ok((keys, Some(dir)))
        })
        .await
    }

    /// The record under `key` and how long it has left, without moving its expiry.
    pub(crate) async fn peek(&self, key: &str) -> Result<Option<(Record, Duration)>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| {
            let path = inner.path(&key);
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let modified = file.metadata()?.modified()?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            let Some((record, ttl)) = decode(&bytes) else {
                return Ok(None);
            };
            let left = modified
                .checked_add(ttl)
                .and_then(|expires| expires.duration_since(SystemTime::now()).ok());
            Ok(left
                .filter(|left| !left.is_zero())
                .map(|left| (record, left)))
        })
        .await
    }
}

/// The record in `path` and its TTL, if the file exists, is whole and has not expired.
fn read_live(path: &Path) -> io::Result<Option<(Record, Duration)>> {
    Ok(match read(path)? {
        Read::Live(record, ttl) => Some((record, ttl)),
        Read::Missing | Read::Dead => None,
    })
}

/// What a session file holds.
enum Read {
    Missing,
    /// Expired, or damaged (truncated, corrupt): no session, to delete.
    Dead,
    Live(Record, Duration),
}

fn read(path: &Path) -> io::Result<Read> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Read::Missing),
        Err(e) => return Err(e),
    };
    let modified = file.metadata()?.modified()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let Some((record, ttl)) = decode(&bytes) else {
        tracing::warn!("damaged session file; treating it as no session");
        return Ok(Read::Dead);
    };
    let expires = modified.checked_add(ttl).unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(if expires > SystemTime::now() {
        Read::Live(record, ttl)
    } else {
        Read::Dead
    })
}

/// Moves the file's modification time (its expiry) to now.
fn touch(path: &Path) -> io::Result<()> {
    match File::options().write(true).open(path) {
        Ok(file) => file.set_modified(SystemTime::now()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The file name of a storage key: `[A-Za-z0-9_-]` as they are, any other byte as `%XX`,
/// then `.session`.
fn file_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 16);
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push('.');
    name.push_str(EXTENSION);
    name
}

/// The storage key of a file name without its extension.
fn decode_name(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            key.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            key.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(key).ok()
}

/// `MAGIC | ttl ms (u64) | fields (u32) | per field: name length (u32), name, value length
/// (u32), value | the first 8 bytes of the SHA-256 of everything before`. Big-endian.
pub(crate) fn encode(record: &Record, ttl: Duration) -> Vec<u8> {
    let size: usize = record.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 12 + size + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&millis(ttl).to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(record.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for (name, value) in record {
        for part in [name.as_bytes(), value] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum);
    out
}

/// The checksum that ends a session file: the first 8 bytes of the SHA-256 of the rest.
pub(crate) fn checksum(body: &[u8]) -> [u8; 8] {
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&Sha256::digest(body)[..8]);
    sum
}

pub(crate) fn decode(bytes: &[u8]) -> Option<(Record, Duration)> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    if checksum(body) != *sum {
        return None;
    }
    let mut rest = body.strip_prefix(MAGIC.as_slice())?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let ttl = Duration::from_millis(u64::from_be_bytes(take(8)?.try_into().ok()?));
    let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut record = Record::new();
    for _ in 0..count {
        let len = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let name = std::str::from_utf8(take(usize::try_from(len).ok()?)?)
            .ok()?
            .to_owned();
        let len = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let value = take(usize::try_from(len).ok()?)?.to_vec();
        record.insert(name, value);
    }
    rest.is_empty().then_some((record, ttl))
}

fn io_error(e: io::Error) -> StoreError {
    let kind = match e.kind() {
        io::ErrorKind::TimedOut => StoreErrorKind::Timeout,
        io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound => StoreErrorKind::Unavailable,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreErrorKind::Full,
        _ => StoreErrorKind::Backend,
    };
    StoreError::new(kind, e)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Sweeps every `gc_interval` until the store is dropped. It wakes at least every 100 ms to
/// see whether the store is gone and whether the interval changed, so that a new interval
/// applies at once, not after the wait of the old one.
fn sweep_until_dropped(store: &Weak<Inner>) {
    const TICK: Duration = Duration::from_millis(100);
    let mut last = std::time::Instant::now();
    loop {
        let Some(interval) = store
            .upgrade()
            .map(|inner| Duration::from_millis(inner.gc_interval_ms.load(Ordering::Relaxed)))
        else {
            return;
        };
        let waited = last.elapsed();
        if waited < interval {
            thread::sleep((interval - waited).min(TICK));
            continue;
        }
        last = std::time::Instant::now();
        let Some(inner) = store.upgrade() else { return };
        if let Err(e) = inner.sweep() {
            tracing::warn!(error = %e, "could not sweep the session directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_reversible() {
        for key in ["session:ab12", "../../etc/passwd", "a/b", ".hidden", "ü"] {
            let name = file_name(key);
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-%.".contains(&b)),
                "{name}"
            );
            assert!(!name.starts_with('.'), "{name}");
            let stem = name.strip_suffix(".session").unwrap();
            assert_eq!(decode_name(stem).as_deref(), Some(key));
        }
        assert_eq!(file_name("session:ab"), "session%3Aab.session");
    }

    #[test]
    fn records_round_trip_and_any_damage_is_no_record() {
        let mut record = Record::new();
        record.insert("m:c".into(), b"1.0123456789abcdef".to_vec());
        record.insert("d:user".into(), b"\x01\"ann\"".to_vec());
        record.insert("d:empty".into(), Vec::new());
        let bytes = encode(&record, Duration::from_secs(90));
        assert_eq!(decode(&bytes), Some((record, Duration::from_secs(90))));
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "truncated at {cut}");
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            assert_eq!(decode(&flipped), None, "byte {i} flipped");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }
}

//! [`WritebackPacer`]: writing the cluster's changed table files to disk every second, so
//! that the kernel never holds tens of seconds of them.
//!
//! PostgreSQL writes its table and index files through the kernel's page cache and syncs
//! them only at checkpoints. Its `*_flush_after` settings ask the kernel to write back the
//! pages PostgreSQL itself writes out of its buffers, but a table that grows (PostgreSQL 15
//! extends a file by writing an empty page into it) leaves its new pages dirty in the cache.
//! The kernel then writes a file's dirty pages once the oldest of them is
//! `vm.dirty_expire_centisecs` old (30 s by default): under a steady load of verifications
//! (the history and audit tables grow by about 6–10 MB/s) that is 100–200 MB at once, every
//! 30 s, and every commit's WAL flush queued behind that burst waited 25–110 ms.
//!
//! The pacer syncs (`fdatasync`) every file under `base/` that changed since its previous
//! pass, once per interval, from a thread of its own: the same bytes reach the disk, a
//! second's worth at a time, and commits no longer meet a burst. It reads nothing and
//! changes nothing; a file that disappears meanwhile (a table dropped or rewritten) is
//! skipped.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How far before a pass a file's change may be stamped and still be synced by the next
/// pass: the kernel stamps modifications with a coarse clock (one timer tick, 1–10 ms).
const CLOCK_MARGIN: Duration = Duration::from_millis(100);

/// A thread that syncs the recently changed table files of a data directory at a steady
/// interval; stopped by [`WritebackPacer::stop`] or when dropped.
#[derive(Debug)]
pub struct WritebackPacer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Files synced (changed since the previous pass).
    pub synced: usize,
    /// Files that could not be opened or synced (gone meanwhile, or not readable).
    pub failed: usize,
}

impl WritebackPacer {
    /// Starts pacing the files under `data_dir/base` every `interval` (which must not be
    /// zero). `on_pass` is told what each pass did and how long it took (for logging).
    pub fn start(
        data_dir: &Path,
        interval: Duration,
        on_pass: impl Fn(Pass, Duration) + Send + 'static,
    ) -> std::io::Result<WritebackPacer> {
        assert!(!interval.is_zero(), "a writeback interval of zero");
        let base = data_dir.join("base");
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = Arc::clone(&stop);
        // Files changed before the pacer started are the kernel's to write, as before.
        let started = SystemTime::now();
        let mut since = started.checked_sub(CLOCK_MARGIN).unwrap_or(started);
        let thread = std::thread::Builder::new()
            .name("pg-writeback".to_owned())
            .spawn(move || {
                let (lock, wake) = &*stopped;
                let mut done = lock.lock().unwrap_or_else(|poison| poison.into_inner());
                loop {
                    let deadline = Instant::now() + interval;
                    while !*done {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        done = wake
                            .wait_timeout(done, left)
                            .unwrap_or_else(|poison| poison.into_inner())
                            .0;
                    }
                    if *done {
                        return;
                    }
                    drop(done);
                    let started = Instant::now();
                    // A file changed while this pass runs is synced again by the next one; so
                    // is one changed just before it (the kernel stamps files with a clock
                    // that may lag this one by a few milliseconds).
                    let now = SystemTime::now();
                    let pass = sync_changed(&base, since);
                    since = now.checked_sub(CLOCK_MARGIN).unwrap_or(now);
                    on_pass(pass, started.elapsed());
                    done = lock.lock().unwrap_or_else(|poison| poison.into_inner());
                }
            })?;
        Ok(WritebackPacer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for its pass in progress, if any, to end.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|poison| poison.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WritebackPacer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Syncs every regular file under `base/<database>/` modified at or after `since`.
pub fn sync_changed(base: &Path, since: SystemTime) -> Pass {
    let mut pass = Pass::default();
    for file in changed_files(base, since) {
        match File::open(&file).and_then(|file| file.sync_data()) {
            Ok(()) => pass.synced += 1,
            Err(_) => pass.failed += 1,
        }
    }
    pass
}

/// The regular files of the databases' directories under `base` modified at or after
/// `since` (a directory that cannot be read contributes nothing).
fn changed_files(base: &Path, since: SystemTime) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(databases) = fs::read_dir(base) else {
        return files;
    };
    for database in databases.flatten() {
        let Ok(entries) = fs::read_dir(database.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_file() && meta.modified().is_ok_and(|modified| modified >= since) {
                files.push(entry.path());
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "otp-embedded-pg-writeback-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("base/5")).unwrap();
        fs::create_dir_all(dir.join("base/16384")).unwrap();
        dir
    }

    #[test]
    fn only_files_changed_since_the_previous_pass_are_synced() {
        let dir = scratch("changed");
        fs::write(dir.join("base/5/1259"), b"old").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let since = SystemTime::now();
        std::thread::sleep(Duration::from_millis(20));
        let mut grown = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("base/16384/16455"))
            .unwrap();
        grown.write_all(&[0; 8192]).unwrap();
        fs::write(dir.join("base/16384/16466_fsm"), b"new").unwrap();
        fs::create_dir(dir.join("base/16384/pgsql_tmp")).unwrap();

        let mut changed = changed_files(&dir.join("base"), since);
        changed.sort();
        assert_eq!(
            changed,
            [
                dir.join("base/16384/16455"),
                dir.join("base/16384/16466_fsm")
            ]
        );
        assert_eq!(
            sync_changed(&dir.join("base"), since),
            Pass {
                synced: 2,
                failed: 0
            }
        );
        // Nothing changed since: nothing to do; no base directory: nothing either.
        assert_eq!(
            sync_changed(&dir.join("base"), SystemTime::now()),
            Pass::default()
        );
        assert_eq!(sync_changed(&dir.join("missing"), since), Pass::default());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_pacer_syncs_each_interval_and_stops_at_once() {
        let dir = scratch("pacer");
        let (passes, seen) = mpsc::channel();
        let pacer = WritebackPacer::start(&dir, Duration::from_millis(200), move |pass, _| {
            let _ = passes.send(pass);
        })
        .unwrap();
        // Changed after the pacer started: the next pass syncs it, the one after does not.
        fs::write(dir.join("base/16384/16455"), b"page").unwrap();
        let mut synced = Vec::new();
        for _ in 0..3 {
            synced.push(seen.recv_timeout(Duration::from_secs(5)).unwrap().synced);
        }
        assert_eq!(synced.iter().sum::<usize>(), 1, "{synced:?}");
        assert_eq!(synced.last(), Some(&0));
        let stopping = Instant::now();
        pacer.stop();
        assert!(stopping.elapsed() < Duration::from_secs(1));
        let _ = fs::remove_dir_all(&dir);
    }
}

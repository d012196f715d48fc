//! One owner per data directory (SPEC §6 r2): an exclusive lock on `<data-dir>/lifeboat.lock`,
//! taken before the database is opened and held for as long as the store's writer lives.
//!
//! Two processes writing one SQLite file through two writers would each believe it is the
//! only writer: a poisoned writer in one would cut the WAL the other just committed to.
//! The lock is an advisory `flock`, released by the kernel when the process dies (even by
//! `kill -9`), so a crashed owner never leaves a stale lock behind. The file holds the
//! owner's pid, for the message the second process prints.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::Error;

/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "lifeboat.lock";

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    /// Holding the open file holds the lock.
    _file: File,
}

impl DirLock {
    /// Takes the lock on `data_dir` (which must exist), or answers [`Error::Locked`]
    /// with the owner's pid without changing anything.
    pub fn acquire(data_dir: &Path) -> Result<DirLock, Error> {
        let path = data_dir.join(LOCK_FILE);
        let unavailable =
            |e: std::io::Error| Error::Unavailable(format!("cannot lock {}: {e}", path.display()));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(unavailable)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut owner = String::new();
                // The owner's pid is advisory: a read that fails leaves it unknown.
                let _ = file.read_to_string(&mut owner);
                return Err(Error::Locked {
                    dir: data_dir.display().to_string(),
                    pid: owner.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(unavailable(e)),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_all())
            .map_err(unavailable)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock on the same directory is refused with this process's pid, and is
    /// granted again once the first is dropped.
    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = DirLock::acquire(dir.path()).expect("first lock");
        match DirLock::acquire(dir.path()) {
            Err(Error::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        DirLock::acquire(dir.path()).expect("lock after release");
    }
}

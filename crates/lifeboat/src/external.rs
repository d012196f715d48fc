//! External files (SPEC §5 r2): paths on the server host, registered inside the asset
//! roots and checked again on every read, because anything on the host may replace them.
//!
//! A path is resolved (symlinks followed) and must land inside a root; the file is then
//! opened without blocking (`O_NONBLOCK`, so a FIFO put in its place cannot hang the
//! read), and what was opened is checked: a regular file, still inside a root (the path
//! the kernel reports for the open descriptor, so a swap between the check and the open
//! is caught), and of the registered size. Nothing outside the roots is ever opened for
//! reading its bytes.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use lifeboat_core::FileLook;

/// The configured asset roots, as given and as resolved.
#[derive(Debug, Clone, Default)]
pub(crate) struct Roots(Vec<PathBuf>);

/// Why an external file cannot be served as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Changed {
    /// Nothing readable is there any more (gone, or replaced by something that is not a
    /// regular file inside a root).
    Missing(String),
    /// A regular file is there, but not of the registered size.
    Corrupt(String),
}

impl Roots {
    /// Keeps each root that resolves; a root that does not exist cannot hold files.
    pub(crate) fn new(roots: Vec<PathBuf>) -> Roots {
        Roots(
            roots
                .into_iter()
                .filter_map(|root| std::fs::canonicalize(root).ok())
                .collect(),
        )
    }

    fn contain(&self, resolved: &Path) -> bool {
        self.0.iter().any(|root| resolved.starts_with(root))
    }

    /// Where a path to register resolves: `Ok(Some)` inside a root, `Ok(None)` inside a
    /// root but missing, `Err` outside every root — decided before existence, so a path
    /// outside the roots is refused the same whether or not it exists.
    pub(crate) fn resolve_for_registration(&self, path: &Path) -> Result<Option<PathBuf>, ()> {
        if let Ok(resolved) = std::fs::canonicalize(path) {
            return if self.contain(&resolved) {
                Ok(Some(resolved))
            } else {
                Err(())
            };
        }
        // Missing: resolve the longest existing ancestor, then the rest by name only.
        let mut existing = path.to_path_buf();
        let mut rest = Vec::new();
        while !existing.exists() {
            let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                return Err(());
            };
            rest.push(name);
            if !existing.pop() {
                return Err(());
            }
        }
        let mut resolved = std::fs::canonicalize(&existing).map_err(|_| ())?;
        for name in rest.into_iter().rev() {
            resolved.push(name);
        }
        let lexical = resolved
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if lexical && self.contain(&resolved) {
            Ok(None)
        } else {
            Err(())
        }
    }

    /// Opens a registered external file for reading, checked as the module says; `size`
    /// is the registered size.
    pub(crate) fn open(&self, path: &str, size: u64) -> Result<File, Changed> {
        let (file, found) = self.open_checked(path)?;
        if found != size {
            return Err(Changed::Corrupt(format!(
                "{path}: is {found} bytes, registered with {size}"
            )));
        }
        Ok(file)
    }

    /// Opens an external file checked as the module says, whatever its size; answers the
    /// open file and its size.
    pub(crate) fn open_checked(&self, path: &str) -> Result<(File, u64), Changed> {
        let missing = |why: &str| Changed::Missing(format!("{path}: {why}"));
        let resolved = std::fs::canonicalize(path).map_err(|_| missing("no longer exists"))?;
        if !self.contain(&resolved) {
            return Err(missing("now resolves outside the asset roots"));
        }
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
            .open(&resolved)
            .map_err(|_| missing("cannot be opened"))?;
        let meta = file.metadata().map_err(|_| missing("cannot be read"))?;
        if !meta.is_file() {
            return Err(missing("is not a regular file"));
        }
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|_| missing("cannot be located"))?;
        if !self.contain(&opened) {
            return Err(missing("was replaced by a file outside the asset roots"));
        }
        Ok((file, meta.len()))
    }

    /// The cheap check recovery makes: the path still resolves inside a root to a regular
    /// file of `size` bytes (of another size, it differs). Never opens the file.
    pub(crate) fn look(&self, path: &str, size: u64) -> FileLook {
        let meta = std::fs::canonicalize(path)
            .ok()
            .filter(|resolved| self.contain(resolved))
            .and_then(|resolved| std::fs::metadata(resolved).ok())
            .filter(std::fs::Metadata::is_file);
        match meta {
            None => FileLook::Absent,
            Some(meta) if meta.len() == size => FileLook::Present,
            Some(_) => FileLook::Differs,
        }
    }
}

//! `Lifeboat::import` of arbitrary bytes: refused cleanly (never a panic), and a refused
//! archive leaves no file behind.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lifeboat::{Config, Lifeboat, TenantId};

struct World {
    runtime: tokio::runtime::Runtime,
    lifeboat: Lifeboat,
    dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temp dir");
        let lifeboat = runtime
            .block_on(Lifeboat::open(Config::new(dir.path())))
            .expect("open");
        World { runtime, lifeboat, dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let imported = world.runtime.block_on(
        world
            .lifeboat
            .import(&TenantId::default(), std::io::Cursor::new(data.to_vec())),
    );
    if imported.is_err() {
        let tmp = world.dir.path().join("blobs").join("tmp");
        let left = std::fs::read_dir(tmp).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "a refused import left files in tmp/");
    }
});

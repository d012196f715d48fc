//! `AssetName::parse`: never panics; anything accepted is a relative path of plain
//! segments, so no path built from it can leave its directory.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use lifeboat_core::AssetName;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = AssetName::parse(raw) {
        assert_eq!(name.as_str(), raw);
        assert!(
            Path::new(raw)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        );
        assert!(Path::new("/base").join(raw).starts_with("/base"));
    }
});

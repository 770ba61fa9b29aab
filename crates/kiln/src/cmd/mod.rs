//! One module per group of commands.

pub mod append;
pub mod archive;
pub mod build;
pub mod build_cache;
pub mod build_plan;
pub mod build_toml;
pub mod change;
pub mod completion;
pub mod container;
pub mod contents;
pub mod dockerfile;
pub mod format;
pub mod image;
pub mod images;
pub mod images_filter;
pub mod lock;
pub mod manifest_list;
pub mod registry;
pub mod run_opts;
pub mod surgery;
pub mod system;
pub mod transport;
pub mod tty;

use std::path::Path;

use anyhow::Context;
use kiln_image::Store;

pub fn open_store(root: &Path) -> anyhow::Result<Store> {
    Store::open(root).with_context(|| format!("opening the store at {}", root.display()))
}

/// `SOURCE_DATE_EPOCH` from the environment, when set and valid.
pub fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .parse::<i64>()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        _ => Ok(None),
    }
}

/// The time to stamp on new config and history entries.
pub fn created_now(epoch: Option<i64>) -> String {
    match epoch {
        Some(e) => kiln_image::time::rfc3339(e),
        None => kiln_image::store::now_rfc3339(),
    }
}

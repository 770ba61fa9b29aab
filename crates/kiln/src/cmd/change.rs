//! `--change` for `kiln import`: Dockerfile instructions that edit the
//! config, as `docker import --change` takes them. The parsing and the
//! edit itself are `kiln_image::config_edit`'s, shared with `kiln mutate`.

use anyhow::Context;
use kiln_image::ImageConfig;
use kiln_image::config_edit::{ConfigEdit, apply_all, parse_change};

/// Applies the `--change` lines to `config`, in order.
pub fn apply(config: &mut ImageConfig, lines: &[String]) -> anyhow::Result<()> {
    let mut edits: Vec<ConfigEdit> = Vec::new();
    for line in lines {
        edits.extend(parse_change(line).with_context(|| format!("--change {line:?}"))?);
    }
    apply_all(config, &edits);
    Ok(())
}

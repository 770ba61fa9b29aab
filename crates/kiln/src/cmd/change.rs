//! `--change` for `kiln import`: Dockerfile instructions that edit the
//! config, as `docker import --change` takes them. The Dockerfile frontend
//! parses each line (`kiln_dockerfile::change`) and the one pure config
//! edit (`kiln_image::config_edit`) applies it, as for a build's steps.

use anyhow::Context;
use kiln_dockerfile::change::parse_change;
use kiln_dockerfile::stage::ImageInfo;
use kiln_image::ImageConfig;
use kiln_image::config_edit::{ConfigEdit, apply_all};

/// Applies the `--change` lines to `config`, in order: each line sees the
/// config as the lines before it left it (`$VAR`, a relative WORKDIR), as
/// the steps of a Dockerfile do.
pub fn apply(config: &mut ImageConfig, lines: &[String]) -> anyhow::Result<()> {
    let mut edits: Vec<ConfigEdit> = Vec::new();
    for line in lines {
        let mut so_far = config.clone();
        apply_all(&mut so_far, &edits);
        let image = ImageInfo::from_config(&so_far);
        edits.extend(parse_change(line, &image).with_context(|| format!("--change {line:?}"))?);
    }
    apply_all(config, &edits);
    Ok(())
}

//! `kiln completion SHELL`: the shell's completion script for every
//! command and flag, generated from the same definitions clap parses.

use clap::Args;
use clap_complete::Shell;

#[derive(Args)]
#[command(
    after_help = "Load it for this shell: `source <(kiln completion bash)`; \
for every shell: `kiln completion bash > /etc/bash_completion.d/kiln`, \
`kiln completion zsh > \"${fpath[1]}/_kiln\"`, \
`kiln completion fish > ~/.config/fish/completions/kiln.fish`."
)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell
    shell: Shell,
}

/// Prints the script for `cli`, the whole command tree.
pub fn completion(mut cli: clap::Command, a: CompletionArgs) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cli, "kiln", &mut script);
    crate::stdout::write(format_args!("{}", String::from_utf8_lossy(&script)));
    Ok(())
}

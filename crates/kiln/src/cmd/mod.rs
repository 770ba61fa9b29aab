//! Subcommands.
pub mod dockerfile;

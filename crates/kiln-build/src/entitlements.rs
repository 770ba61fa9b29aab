//! Entitlements: what a Dockerfile may ask for only when the user running
//! the build allows it (`kiln build --allow network.host`, buildx's flag
//! and names). A Dockerfile is untrusted; these let it reach past the
//! sandbox:
//!
//! - `network.host`: `RUN --network=host`, and ADD of a URL or git
//!   repository on the build host's own network (see [`crate::host_net`]);
//! - `security.insecure`: `RUN --security=insecure`.
//!
//! A RUN that asks for one without it fails before any step runs, with
//! the file, line and column of the RUN. The user's own `kiln build
//! --network host` needs no entitlement: it comes from the command line,
//! not from the Dockerfile.

use kiln_dockerfile::diag::{Diag, Diagnostics, Source};
use kiln_dockerfile::instructions::{Instr, Network, Security};
use kiln_dockerfile::stage::Stage;

use crate::BuildError;
use crate::host_net::HostNetwork;

/// What the user allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entitlements {
    pub network_host: bool,
    pub security_insecure: bool,
}

impl Entitlements {
    /// Parses `--allow` values: each one or several, comma-separated.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Entitlements, BuildError> {
        let mut e = Entitlements::default();
        for v in values {
            for name in v.as_ref().split(',').map(str::trim) {
                match name {
                    "network.host" => e.network_host = true,
                    "security.insecure" => e.security_insecure = true,
                    "" => {}
                    other => {
                        return Err(BuildError::Usage(format!(
                            "--allow {other:?}: unknown entitlement (network.host or security.insecure)"
                        )));
                    }
                }
            }
        }
        Ok(e)
    }

    /// Whether ADD may reach the build host's own network.
    pub fn host_network(&self) -> HostNetwork {
        if self.network_host {
            HostNetwork::Allowed
        } else {
            HostNetwork::Refused
        }
    }

    /// Checks every RUN of `stages` (ONBUILD triggers too) against what is
    /// allowed; one error per RUN that asks for more.
    pub fn check(&self, stages: &[Stage], file: &str, dockerfile: &str) -> Result<(), BuildError> {
        let src = Source::new(file, dockerfile);
        let mut items = Vec::new();
        for r in stages.iter().flat_map(|s| &s.instructions) {
            let Instr::Run(run) = &r.instr else { continue };
            let mut asks = Vec::new();
            if run.network == Network::Host && !self.network_host {
                asks.push(("--network=host", "network.host"));
            }
            if run.security == Security::Insecure && !self.security_insecure {
                asks.push(("--security=insecure", "security.insecure"));
            }
            for (flag, entitlement) in asks {
                let whose = if r.from_onbuild {
                    " (an ONBUILD trigger of the base image)"
                } else {
                    ""
                };
                items.push(
                    Diag::error(
                        "entitlement",
                        format!(
                            "RUN {flag}{whose} needs the {entitlement} entitlement: \
                             `kiln build --allow {entitlement}` allows it"
                        ),
                        &src,
                        r.span.clone(),
                    )
                    .with_help(format!("kiln build --allow {entitlement} …")),
                );
            }
        }
        if items.is_empty() {
            Ok(())
        } else {
            Err(BuildError::Dockerfile(Diagnostics { items }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_is_repeatable_and_comma_separated() {
        let e = Entitlements::parse(&["network.host"]).unwrap();
        assert!(e.network_host && !e.security_insecure);
        let e = Entitlements::parse(&["network.host,security.insecure"]).unwrap();
        assert!(e.network_host && e.security_insecure);
        let e = Entitlements::parse(&["security.insecure", "network.host"]).unwrap();
        assert!(e.network_host && e.security_insecure);
        let err = Entitlements::parse(&["fs.write"]).unwrap_err();
        assert!(err.to_string().contains("unknown entitlement"), "{err}");
        assert_eq!(
            Entitlements::parse::<&str>(&[]).unwrap(),
            Entitlements::default()
        );
    }

    fn stages(df: &str) -> Vec<Stage> {
        let parsed = kiln_dockerfile::parse("Dockerfile", df).unwrap();
        kiln_dockerfile::resolve(&parsed, &Default::default())
            .unwrap()
            .stages
    }

    #[test]
    fn a_run_asking_for_more_names_its_place_and_the_flag() {
        let df =
            "FROM scratch\nRUN true\n  RUN --network=host true\nRUN --security=insecure true\n";
        let err = Entitlements::default()
            .check(&stages(df), "Dockerfile", df)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Dockerfile:3:3: RUN --network=host needs the network.host entitlement"),
            "{err}"
        );
        assert!(err.contains("`kiln build --allow network.host`"), "{err}");
        assert!(
            err.contains("Dockerfile:4:1: RUN --security=insecure needs the security.insecure"),
            "{err}"
        );
        let all = Entitlements {
            network_host: true,
            security_insecure: true,
        };
        assert!(all.check(&stages(df), "Dockerfile", df).is_ok());
        let plain = "FROM scratch\nRUN --network=none true\n";
        assert!(
            Entitlements::default()
                .check(&stages(plain), "Dockerfile", plain)
                .is_ok()
        );
    }
}

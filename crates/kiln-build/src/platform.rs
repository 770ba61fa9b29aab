//! Building for a platform other than the host's. kiln does no emulation:
//! base images are picked for the target platform, the result's config
//! says that platform, and a RUN for a foreign architecture runs only
//! where the kernel already has a binfmt_misc handler (qemu-user, say)
//! for that architecture's executables. Without one, the RUN fails before
//! it starts, naming the platform.

use std::path::Path;

use kiln_image::Platform;

use crate::BuildError;

/// The platform a stage builds for: its `FROM --platform`, or the target.
pub fn stage_platform(
    stage: &kiln_dockerfile::stage::Stage,
    target: &Platform,
) -> Result<Platform, BuildError> {
    match stage.platform.as_deref().filter(|p| !p.is_empty()) {
        None => Ok(target.clone()),
        Some(p) => Platform::parse(p)
            .map_err(|e| BuildError::Instruction(format!("{}: {e}", stage.original.trim()))),
    }
}

/// The platform as the automatic build args spell it: BuildKit normalises
/// `arm64/v8` to plain `arm64` (TARGETPLATFORM=linux/arm64, no variant).
pub fn arg_platform(p: &Platform) -> kiln_dockerfile::scope::Platform {
    let variant = match (p.architecture.as_str(), p.variant.as_deref()) {
        ("arm64", Some("v8")) | (_, None) => String::new(),
        (_, Some(v)) => v.to_string(),
    };
    kiln_dockerfile::scope::Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant,
    }
}

/// Whether a process for `p` can run here; the error says why not.
pub fn check_can_run(p: &Platform) -> Result<(), BuildError> {
    let host = Platform::host();
    let native = p.os == host.os
        && (p.architecture == host.architecture
            || (host.architecture == "amd64" && p.architecture == "386"));
    if native || binfmt_handles(Path::new("/proc/sys/fs/binfmt_misc"), &p.architecture) {
        return Ok(());
    }
    Err(BuildError::Instruction(format!(
        "cannot RUN for platform {p} on this {host} host: the kernel has no binfmt_misc handler \
         for {} executables, and kiln does no emulation (register one, e.g. qemu-user-static, \
         or build for {host})",
        p.architecture
    )))
}

/// The first 20 bytes of an ELF executable for `arch` (Go's names): what
/// a binfmt_misc magic is matched against.
fn elf_head(arch: &str) -> Option<[u8; 20]> {
    // (class: 1 = 32-bit, 2 = 64-bit; data: 1 = little, 2 = big endian; e_machine)
    let (class, data, machine): (u8, u8, u16) = match arch {
        "amd64" => (2, 1, 0x3e),
        "386" => (1, 1, 0x03),
        "arm64" => (2, 1, 0xb7),
        "arm" => (1, 1, 0x28),
        "ppc64le" => (2, 1, 0x15),
        "ppc64" => (2, 2, 0x15),
        "s390x" => (2, 2, 0x16),
        "riscv64" => (2, 1, 0xf3),
        "mips64le" => (2, 1, 0x08),
        "mips64" => (2, 2, 0x08),
        "mipsle" => (1, 1, 0x08),
        "mips" => (1, 2, 0x08),
        "loong64" => (2, 1, 0x102),
        _ => return None,
    };
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1; // EI_VERSION
    let (e_type, e_machine) = if data == 1 {
        (2u16.to_le_bytes(), machine.to_le_bytes())
    } else {
        (2u16.to_be_bytes(), machine.to_be_bytes())
    };
    h[16..18].copy_from_slice(&e_type);
    h[18..20].copy_from_slice(&e_machine);
    Some(h)
}

/// Whether an enabled binfmt_misc entry under `dir` matches `arch`'s
/// executables.
fn binfmt_handles(dir: &Path, arch: &str) -> bool {
    let Some(head) = elf_head(arch) else {
        return false;
    };
    if std::fs::read_to_string(dir.join("status")).is_ok_and(|s| s.trim() == "disabled") {
        return false;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten()
        .filter(|e| !matches!(e.file_name().to_str(), Some("status" | "register")))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .any(|text| entry_matches(&text, &head))
}

fn entry_matches(text: &str, head: &[u8]) -> bool {
    let mut enabled = false;
    let mut offset = 0usize;
    let mut magic = None;
    let mut mask = None;
    for line in text.lines() {
        match line.split_once(' ') {
            _ if line == "enabled" => enabled = true,
            Some(("offset", v)) => offset = v.trim().parse().unwrap_or(usize::MAX),
            Some(("magic", v)) => magic = hex(v.trim()),
            Some(("mask", v)) => mask = hex(v.trim()),
            _ => {}
        }
    }
    let Some(magic) = magic else { return false };
    if !enabled || magic.is_empty() || offset.saturating_add(magic.len()) > head.len() {
        return false;
    }
    magic.iter().enumerate().all(|(i, m)| {
        let k = mask
            .as_ref()
            .and_then(|k: &Vec<u8>| k.get(i))
            .copied()
            .unwrap_or(0xff);
        head[offset + i] & k == m & k
    })
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `qemu-binfmt-conf.sh` registers for aarch64.
    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn qemu_entry_matches_its_architecture_only() {
        let arm64 = elf_head("arm64").unwrap();
        let amd64 = elf_head("amd64").unwrap();
        assert!(entry_matches(QEMU_AARCH64, &arm64));
        assert!(!entry_matches(QEMU_AARCH64, &amd64));
        let disabled = QEMU_AARCH64.replacen("enabled", "disabled", 1);
        assert!(!entry_matches(&disabled, &arm64));
    }

    #[test]
    fn binfmt_dir_is_scanned() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        std::fs::write(d.path().join("register"), "").unwrap();
        assert!(!binfmt_handles(d.path(), "arm64"));
        std::fs::write(d.path().join("qemu-aarch64"), QEMU_AARCH64).unwrap();
        assert!(binfmt_handles(d.path(), "arm64"));
        assert!(!binfmt_handles(d.path(), "s390x"));
        std::fs::write(d.path().join("status"), "disabled\n").unwrap();
        assert!(!binfmt_handles(d.path(), "arm64"));
    }

    #[test]
    fn arm64_args_drop_v8() {
        let p = arg_platform(&Platform::parse("linux/arm64").unwrap());
        assert_eq!(p.variant, "");
        let p = arg_platform(&Platform::parse("linux/arm/v7").unwrap());
        assert_eq!(p.variant, "v7");
    }
}

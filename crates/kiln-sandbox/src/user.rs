//! Resolve a `USER` string (`name`, `uid`, `name:group`, `uid:gid`) against the
//! ROOTFS's `/etc/passwd` and `/etc/group`, with supplementary groups, the way
//! runc does. The files come from an image, so they are hostile input: they are
//! read with a size cap, malformed lines are skipped, nothing panics. This
//! module only parses; it never reads the host's user database (the caller
//! reads the files from inside the new root) and never calls NSS.

/// Files larger than this are refused: no image needs a 4 MiB passwd.
pub const MAX_DB_SIZE: u64 = 4 << 20;

/// The identity a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Groups for `setgroups(2)`: the primary gid first, then supplementary.
    pub groups: Vec<u32>,
    /// Home directory from passwd, used for `HOME` when the env has none.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

fn passwd_entries(db: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    db.lines().filter_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let uid = f.next()?.trim().parse().ok()?;
        let gid = f.next()?.trim().parse().ok()?;
        let _gecos = f.next();
        let home = f.next().unwrap_or("");
        (!name.is_empty()).then_some(PasswdEntry {
            name,
            uid,
            gid,
            home,
        })
    })
}

fn group_entries(db: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    db.lines().filter_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let gid = f.next()?.trim().parse().ok()?;
        let members = f.next().unwrap_or("");
        (!name.is_empty()).then_some(GroupEntry { name, gid, members })
    })
}

/// A user of `passwd` by name, or by number when `user` is one: its uid
/// and primary gid. The one parser of passwd: `COPY --chown`, `WORKDIR`'s
/// owner and a process's identity all use it.
pub fn find_user(passwd: &str, user: &str) -> Option<(u32, u32)> {
    let by_id = user.parse::<u32>().ok();
    passwd_entries(passwd)
        .find(|e| e.name == user || Some(e.uid) == by_id)
        .map(|e| (e.uid, e.gid))
}

/// A group of `group` by name: its gid.
pub fn find_group(group: &str, name: &str) -> Option<u32> {
    group_entries(group).find(|e| e.name == name).map(|e| e.gid)
}

/// Resolve `spec` (empty means root). `passwd`/`group` are the file contents
/// (empty when the file is missing). Numeric IDs not in the files are allowed,
/// as in Docker (gid defaults to 0 then); names must exist.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };

    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or_else(|| format!("no user {user_part:?} in the rootfs /etc/passwd"))?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        // parse succeeded above when there is no entry
        None => user_part.parse::<u32>().map_err(|e| e.to_string())?,
    };

    let gid = match group_part {
        Some(g) if !g.is_empty() => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => find_group(group, g)
                .ok_or_else(|| format!("no group {g:?} in the rootfs /etc/group"))?,
        },
        _ => entry.as_ref().map_or(0, |e| e.gid),
    };

    let mut groups = vec![gid];
    if let Some(e) = &entry {
        for g in group_entries(group) {
            if g.members.split(',').any(|m| m.trim() == e.name) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
    }
    // setgroups(2) takes at most NGROUPS_MAX (65536); a hostile file could list more.
    groups.truncate(65536);

    let home = entry
        .as_ref()
        .map(|e| e.home)
        .filter(|h| h.starts_with('/'))
        .unwrap_or("/")
        .to_string();
    Ok(ExecUser {
        uid,
        gid,
        groups,
        home,
    })
}

/// Read a user database file, capped at [`MAX_DB_SIZE`]; a missing or
/// unreadable file reads as empty (scratch images have none).
pub fn read_db(path: &std::path::Path) -> String {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(path) else {
        return String::new();
    };
    let mut buf = Vec::new();
    if f.take(MAX_DB_SIZE).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        garbage line\n\
        bad:x:notanumber:1::/:/bin/sh\n\
        app:x:1000:1000::/home/app:/bin/sh\n\
        nobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:other,app\n::::\nwheel:x:10:app\n";

    #[test]
    fn root_by_default() {
        let u = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (0, 0, vec![0]));
        assert_eq!(u.home, "/root");
    }

    #[test]
    fn name_with_supplementary() {
        let u = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000, 2000, 10]);
        assert_eq!(u.home, "/home/app");
    }

    #[test]
    fn explicit_group_and_numeric() {
        let u = resolve("app:extra", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 2000));
        let u = resolve("4242:77", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (4242, 77, vec![77]));
        assert_eq!(u.home, "/");
        let u = resolve("1000", PASSWD, GROUP).unwrap();
        assert_eq!(u.gid, 1000);
    }

    #[test]
    fn unknown_names_fail() {
        assert!(resolve("ghost", PASSWD, GROUP).is_err());
        assert!(resolve("app:ghost", PASSWD, GROUP).is_err());
        assert!(resolve("bad", PASSWD, GROUP).is_err());
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let junk = "\u{0}:\u{0}:::::::\n:::\n\n::99999999999999:1\n";
        let _ = resolve("x", junk, junk);
        let _ = resolve("0:0", junk, junk);
        let _ = resolve(":", junk, junk);
        let _ = resolve("a:b:c", junk, junk);
    }
}

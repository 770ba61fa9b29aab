//! Snapshots of root filesystems: unpacked layer directories shared by diff
//! ID, overlay mounts (with `userxattr` when rootless), the copy fallback, and
//! diffs of a snapshot back into a layer. It does not run processes.

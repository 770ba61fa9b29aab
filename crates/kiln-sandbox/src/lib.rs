//! Run one process inside a root filesystem, isolated by namespaces: user
//! (rootless via newuidmap), mount, pid, ipc, uts and optionally net. It does not
//! know about images or layers; it takes a prepared rootfs directory.

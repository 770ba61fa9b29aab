//! One run → diff → commit path, for a build's RUN and for `kiln run
//! --commit` alike: a container over an image's layers, one process the
//! caller runs on its root filesystem, the diff of what that process
//! changed, and the diff written as a layer blob appended to an image.
//!
//! Keeping this in one place is what keeps the two from drifting apart:
//! what a mount target hides from the diff, how a layer blob is committed,
//! how the container goes away. What the process is, and its mounts, are
//! the caller's (see [`crate::exec`] and [`crate::cache_mount`]).

use std::path::PathBuf;

use kiln_image::layer::{Entry, LayerOptions, write_entries_layer};
use kiln_image::media::{Compression, Format};
use kiln_image::{Descriptor, Digest, History, Image, NewLayer, Store};
use kiln_sandbox::Rootfs;
use kiln_snapshot::{Container, Mode, Snapshots};

use crate::BuildError;

/// A container removed when dropped: the diff's entries name files in it,
/// so it must live until the layer is written.
pub struct ContainerGuard(Option<Container>);

impl ContainerGuard {
    /// Removes the container now, saying whether that failed (dropping
    /// it removes it too, but quietly).
    pub fn remove(mut self) -> Result<(), BuildError> {
        match self.0.take() {
            Some(c) => Ok(c.remove()?),
            None => Ok(()),
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.remove();
        }
    }
}

/// The sandbox's view of a container filesystem.
pub fn rootfs_of(c: &Container) -> Rootfs {
    match c.mode() {
        Mode::Overlay => Rootfs::Overlay {
            lowers: c.lowers().to_vec(),
            upper: c.upper(),
            work: c.work(),
        },
        Mode::Copy => Rootfs::Dir(c.rootfs()),
    }
}

/// What [`run_and_diff`] hands back.
pub struct Ran<T> {
    /// What the caller's run returned.
    pub output: T,
    /// The changes, when the run asked for them.
    pub entries: Option<Vec<Entry>>,
    /// The container the entries' files live in.
    pub container: ContainerGuard,
}

/// Makes a container over `layers`, calls `run` with its root filesystem,
/// and diffs what changed when `run` returns the targets of its mounts
/// (their contents are not the container's, so they are left out of the
/// diff); `None` skips the diff. `phase` is told when each of `snapshot`,
/// `run` and `diff` is done (`kiln run` times them for its bench).
pub fn run_and_diff<T, E: From<BuildError>>(
    store: &Store,
    snaps: &Snapshots,
    layers: &[(Descriptor, Digest)],
    mode: Mode,
    phase: &mut dyn FnMut(&str),
    run: impl FnOnce(Rootfs) -> Result<(T, Option<Vec<PathBuf>>), E>,
) -> Result<Ran<T>, E> {
    let container = snaps
        .create(store, layers, mode)
        .map_err(|e| E::from(e.into()))?;
    let container = ContainerGuard(Some(container));
    phase("snapshot");
    let c = container.0.as_ref().expect("just made");
    let (output, targets) = run(rootfs_of(c))?;
    phase("run");
    let entries = match targets {
        Some(targets) => {
            let entries = c.diff(&targets).map_err(|e| E::from(e.into()))?;
            phase("diff");
            Some(entries)
        }
        None => None,
    };
    Ok(Ran {
        output,
        entries,
        container,
    })
}

/// Writes `entries` as a layer blob in `store`, its media type of
/// `format`, and returns its descriptor and diff ID. A plain (uncompressed)
/// blob is marked as made here, so that it is compressed on the way out
/// rather than pushed as it is (see `kiln_image::compressed`).
pub fn write_layer(
    store: &Store,
    entries: Vec<Entry>,
    opts: &LayerOptions,
    format: Format,
) -> Result<(Descriptor, Digest), BuildError> {
    let (blob, info) = write_entries_layer(entries, opts, store.blob_writer()?)?;
    blob.commit(Some(&info.digest))?;
    if info.compression == Compression::None {
        kiln_image::compressed::mark_built(store, &info.digest)?;
    }
    let media_type = format.layer(info.compression);
    Ok((
        Descriptor::new(media_type, info.digest, info.size),
        info.diff_id,
    ))
}

/// `image` with a step appended: its layer, if it made one, and its
/// history entry (an empty-layer entry when it made none).
pub fn append_layer(image: Image, layer: Option<(Descriptor, Digest)>, history: History) -> Image {
    match layer {
        Some((blob, diff_id)) => image.with_layer(NewLayer { blob, diff_id }, history),
        None => image.with_empty_history(history),
    }
}

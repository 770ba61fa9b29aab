//! Times the copy snapshotter's stat walks on a tree: `cargo run --release
//! -p kiln-snapshot --example stat_walk DIR`. Builds the stat index of DIR,
//! then diffs DIR against it (nothing changed: the diff is the bare walk).
fn main() {
    let dir = std::env::args_os().nth(1).expect("usage: stat_walk DIR");
    let dir = std::path::Path::new(&dir);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let index = kiln_snapshot::StatIndex::build(dir).expect("index");
        let built = t.elapsed();
        let t = std::time::Instant::now();
        let entries = kiln_snapshot::diff_copy(dir, &index, &[]).expect("diff");
        println!(
            "{} paths: index {:.1} ms, diff {:.1} ms ({} entries)",
            index.len(),
            built.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3,
            entries.len()
        );
    }
}

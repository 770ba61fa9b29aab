//! Prints the resolved JSON (or diagnostics) for a Dockerfile on stdin;
//! a debugging aid: `cargo run --example dump -p kiln-dockerfile < Dockerfile`.
use std::io::Read;

fn main() {
    let mut text = String::new();
    if std::io::stdin().read_to_string(&mut text).is_err() {
        std::process::exit(2);
    }
    let df = match kiln_dockerfile::parse("Dockerfile", &text) {
        Ok(df) => df,
        Err(e) => {
            for d in &e.items {
                println!("{d}");
            }
            std::process::exit(1);
        }
    };
    match kiln_dockerfile::resolve(&df, &Default::default()) {
        Ok(r) => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
        Err(e) => {
            for d in &e.items {
                println!("{d}");
            }
        }
    }
}

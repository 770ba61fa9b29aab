//! Times parse + resolve of a generated 10,000-line multi-stage Dockerfile
//! and prints `dockerfile_parse_10k_ms <median>` for the bench harness:
//! `cargo run --release --example parse_bench -p kiln-dockerfile [RUNS]`.

use std::fmt::Write;
use std::time::Instant;

fn generate(lines: usize) -> String {
    let mut s =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine:3.19\nARG VERSION=1.0\n");
    let mut n = 3;
    let mut stage = 0;
    while n < lines {
        if n % 500 == 3 {
            let _ = writeln!(s, "FROM ${{BASE}} AS s{stage}");
            let _ = writeln!(s, "ARG VERSION");
            n += 2;
            stage += 1;
            continue;
        }
        let _ = match n % 10 {
            0 => writeln!(
                s,
                "RUN --mount=type=cache,target=/root/.cache/{n} echo ${{VERSION}} {n} && make -j4 target{n}"
            ),
            1 => writeln!(
                s,
                "ENV VAR_{n}=\"value ${{VERSION:-x}} {n}\" OTHER_{n}=${{VAR_{n}%%.*}}"
            ),
            2 => writeln!(
                s,
                "COPY --chown=1000:1000 --chmod=0644 src/{n}/*.go /app/{n}/"
            ),
            3 => writeln!(s, "LABEL org.example.n{n}=\"{n}\" version=$VERSION"),
            4 => writeln!(s, "WORKDIR /app/dir{n}"),
            5 => writeln!(s, "RUN apt-get install -y \\\n    pkg{n} \\\n    other{n}"),
            6 => writeln!(s, "EXPOSE {}/tcp", 1000 + n % 60000),
            7 => writeln!(s, "# a comment line {n}"),
            8 => {
                if stage > 1 {
                    writeln!(s, "COPY --from=s{} /out/{n} /in/{n}", stage - 2)
                } else {
                    writeln!(s, "USER app{n}")
                }
            }
            _ => writeln!(s, "RUN <<EOF\necho heredoc {n}\nEOF"),
        };
        n += match n % 10 {
            5 => 3,
            9 => 3,
            _ => 1,
        };
    }
    s.push_str("CMD [\"/app/run\"]\n");
    s
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(9);
    let text = generate(10_000);
    let opts = kiln_dockerfile::ResolveOptions::default();
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let df = kiln_dockerfile::parse("Dockerfile", &text).expect("generated Dockerfile parses");
        let r = kiln_dockerfile::resolve(&df, &opts).expect("generated Dockerfile resolves");
        std::hint::black_box(&r);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    eprintln!(
        "lines={} runs={} min={:.2}ms max={:.2}ms",
        text.lines().count(),
        times.len(),
        times[0],
        times[times.len() - 1]
    );
    println!("dockerfile_parse_10k_ms {median:.3}");
}

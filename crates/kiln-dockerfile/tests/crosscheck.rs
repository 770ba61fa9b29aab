//! Differential test: for Dockerfiles both can read, our line reader and
//! the `parse-dockerfile` crate agree on the instruction sequence and the
//! line each instruction starts on. (We read more than it does: heredocs
//! in the middle of RUN lines and several per line.)

use parse_dockerfile::Instruction as P;

fn theirs(text: &str) -> Vec<(String, usize)> {
    let df = parse_dockerfile::parse(text).unwrap_or_else(|e| panic!("parse-dockerfile: {e}"));
    let src = kiln_dockerfile::diag::Source::new("D", text);
    df.instructions
        .iter()
        .map(|i| {
            let (name, span) = match i {
                P::Add(x) => ("ADD", &x.add.span),
                P::Arg(x) => ("ARG", &x.arg.span),
                P::Cmd(x) => ("CMD", &x.cmd.span),
                P::Copy(x) => ("COPY", &x.copy.span),
                P::Entrypoint(x) => ("ENTRYPOINT", &x.entrypoint.span),
                P::Env(x) => ("ENV", &x.env.span),
                P::Expose(x) => ("EXPOSE", &x.expose.span),
                P::From(x) => ("FROM", &x.from.span),
                P::Healthcheck(x) => ("HEALTHCHECK", &x.healthcheck.span),
                P::Label(x) => ("LABEL", &x.label.span),
                P::Maintainer(x) => ("MAINTAINER", &x.maintainer.span),
                P::Onbuild(x) => ("ONBUILD", &x.onbuild.span),
                P::Run(x) => ("RUN", &x.run.span),
                P::Shell(x) => ("SHELL", &x.shell.span),
                P::Stopsignal(x) => ("STOPSIGNAL", &x.stopsignal.span),
                P::User(x) => ("USER", &x.user.span),
                P::Volume(x) => ("VOLUME", &x.volume.span),
                P::Workdir(x) => ("WORKDIR", &x.workdir.span),
                _ => ("?", &x_unknown()),
            };
            (name.to_string(), src.line_col(span.start).0)
        })
        .collect()
}

fn x_unknown() -> std::ops::Range<usize> {
    0..0
}

fn ours(text: &str) -> Vec<(String, usize)> {
    let df = kiln_dockerfile::parse("D", text).unwrap_or_else(|e| panic!("ours: {e}"));
    df.instructions
        .iter()
        .map(|i| (i.keyword.as_str().to_string(), i.line))
        .collect()
}

#[test]
fn agrees_with_parse_dockerfile() {
    let dir = format!("{}/tests/golden", env!("CARGO_MANIFEST_DIR"));
    let mut texts: Vec<String> = ["go.Dockerfile", "python.Dockerfile", "node.Dockerfile"]
        .iter()
        .map(|f| std::fs::read_to_string(format!("{dir}/{f}")).expect("golden file"))
        .collect();
    texts.extend(
        [
            "# escape=`\nFROM scratch\nRUN a `\n  b\nENV A=1 `\n  B=2\n",
            "FROM alpine AS b\n\n# comment\n  RUN echo \\\n# inner comment\n  more\nCMD [\"a\"]\nLABEL a=b c=d\nEXPOSE 80 443\n",
            "ARG X=1\nFROM alpine:$X\nONBUILD RUN make\nHEALTHCHECK --interval=5s CMD true\nSTOPSIGNAL SIGTERM\nUSER 1\nVOLUME [\"/v\"]\nWORKDIR /w\nSHELL [\"/bin/sh\", \"-c\"]\nMAINTAINER me\nADD a b\nENTRYPOINT x\n",
            "from scratch\nrun <<EOF\nhello\nEOF\ncopy <<-X /x\n\tbody\n\tX\n",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    for t in &texts {
        assert_eq!(ours(t), theirs(t), "{t}");
    }
}

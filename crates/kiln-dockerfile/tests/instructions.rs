//! Table tests for every instruction and flag, as resolved.

mod common;

use common::*;
use kiln_dockerfile::instructions::*;
use kiln_dockerfile::mount::{MountType, Sharing};
use kiln_dockerfile::parse::CommandForm;
use kiln_dockerfile::stage::{Base, ImageInfo};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn run(text: &str) -> Run {
    match instrs(text).pop() {
        Some(Instr::Run(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn copy(text: &str) -> Copy {
    match instrs(text).pop() {
        Some(Instr::Copy(c)) => c,
        other => panic!("{other:?}"),
    }
}

fn add(text: &str) -> Add {
    match instrs(text).pop() {
        Some(Instr::Add(c)) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn from_forms() {
    let b = build("ARG V=3.19\nFROM alpine:${V} AS Base\nFROM base\nFROM scratch\n");
    assert_eq!(b.stages.len(), 1);
    let b = build_with(
        "ARG V=3.19\nFROM alpine:${V} AS Base\nFROM base AS two\n",
        &opts(&[("V", "3.20")]),
    );
    assert_eq!(
        b.stages[0].base,
        Base::Image {
            reference: "alpine:3.20".into()
        }
    );
    assert_eq!(b.stages[0].name.as_deref(), Some("base"));
    assert_eq!(b.stages[1].base, Base::Stage { index: 0 });
    assert_eq!(b.stages[1].dependencies, [0]);
    assert_eq!(target("FROM scratch\n").base, Base::Scratch);
    let st = target("FROM --platform=$BUILDPLATFORM golang AS b\n");
    assert_eq!(st.platform.as_deref(), Some("linux/amd64"));
    let mut o = opts(&[]);
    o.named_contexts.insert("base-ctx".into());
    let b = build_with("FROM base-ctx\n", &o);
    assert_eq!(
        b.stages[0].base,
        Base::Context {
            name: "base-ctx".into()
        }
    );
    assert_eq!(error("FROM\n").code, "missing-argument");
    assert_eq!(error("FROM a b\n").code, "bad-from");
    assert_eq!(error("ARG X\nFROM ${X}\n").code, "blank-base");
    assert_eq!(error("FROM Alpine\n").code, "bad-image");
    assert_eq!(error("FROM --platform=linux alpine\n").code, "bad-platform");
    assert_eq!(error("FROM --plat=x alpine\n").code, "unknown-flag");
    assert!(warnings("FROM alpine:$NOPE\n").contains(&"UndefinedArgInFrom".to_string()));
    // A global ARG is not visible inside a stage unless re-declared.
    let e = target("ARG G=1\nFROM scratch\nENV A=${G}x\nARG G\nENV B=${G}x\n").env;
    assert!(e.contains(&Var {
        key: "A".into(),
        value: "x".into()
    }));
    assert!(e.contains(&Var {
        key: "B".into(),
        value: "1x".into()
    }));
}

#[test]
fn run_forms() {
    let r = run("FROM scratch\nRUN echo $HOME \"q\"\n");
    assert_eq!(r.command, CommandForm::Shell("echo $HOME \"q\"".into()));
    assert_eq!(r.argv, s(&["/bin/sh", "-c", "echo $HOME \"q\""]));
    assert_eq!(r.created_by, "RUN /bin/sh -c echo $HOME \"q\" # buildkit");
    let r = run("FROM scratch\nRUN [\"echo\", \"$HOME\"]\n");
    assert_eq!(r.argv, s(&["echo", "$HOME"]));
    let r = run("FROM scratch\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\nRUN a | b\n");
    assert_eq!(r.argv, s(&["/bin/bash", "-eo", "pipefail", "-c", "a | b"]));
    assert_eq!(
        run("FROM scratch\nRUN --network=none x\n").network,
        Network::None
    );
    assert_eq!(
        run("FROM scratch\nRUN --network=host x\n").network,
        Network::Host
    );
    assert_eq!(
        run("FROM scratch\nRUN --network=default x\n").network,
        Network::Default
    );
    assert_eq!(
        run("FROM scratch\nRUN --security=insecure x\n").security,
        Security::Insecure
    );
    assert_eq!(
        run("FROM scratch\nRUN --security=sandbox x\n").security,
        Security::Sandbox
    );
    assert_eq!(
        error("FROM scratch\nRUN --network=bridge x\n").code,
        "bad-flag"
    );
    assert_eq!(
        error("FROM scratch\nRUN --security=root x\n").code,
        "bad-flag"
    );
    assert_eq!(error("FROM scratch\nRUN --network x\n").code, "bad-flag");
    assert_eq!(
        error("FROM scratch\nRUN --network=none --network=host x\n").code,
        "bad-flag"
    );
    assert_eq!(error("FROM scratch\nRUN --nope x\n").code, "unknown-flag");
    assert_eq!(error("FROM scratch\nRUN\n").code, "missing-argument");
    assert_eq!(error("FROM scratch\nRUN [\"a\", b]\n").code, "bad-json");
    // `[ -f x ]` is a shell test, not broken JSON.
    assert_eq!(
        run("FROM scratch\nRUN [ -f /x ] || true\n").argv[2],
        "[ -f /x ] || true"
    );
}

#[test]
fn run_args_env_and_history() {
    let text = "FROM scratch\nARG A=1\nARG B\nARG C=3\nENV C=env\nRUN make\n";
    let r = match build_with(
        text,
        &opts(&[("B", "two"), ("HTTP_PROXY", "http://p"), ("UNUSED", "x")]),
    )
    .stages
    .remove(0)
    .instructions
    .pop()
    .map(|i| i.instr)
    {
        Some(Instr::Run(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        r.history_args,
        vec![
            Var::new("A", "1"),
            Var::new("B", "two"),
            Var::new("C", "env")
        ]
    );
    assert_eq!(
        r.env,
        vec![
            Var::new("A", "1"),
            Var::new("B", "two"),
            Var::new("HTTP_PROXY", "http://p")
        ]
    );
    assert_eq!(
        r.created_by,
        "RUN |3 A=1 B=two C=env /bin/sh -c make # buildkit"
    );
    let b = build_with(text, &opts(&[("UNUSED", "x"), ("no_proxy", "y")]));
    assert_eq!(b.unused_build_args, ["UNUSED"]);
    // A declared proxy arg is recorded.
    let r = match build_with(
        "FROM scratch\nARG HTTP_PROXY\nRUN x\n",
        &opts(&[("HTTP_PROXY", "p")]),
    )
    .stages[0]
        .instructions[1]
        .instr
        .clone()
    {
        Instr::Run(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.history_args, vec![Var::new("HTTP_PROXY", "p")]);
}

#[test]
fn run_mounts() {
    let text = "FROM alpine AS deps\nFROM scratch\nARG CACHE=/root/.cache\n\
        RUN --mount=type=cache,target=$CACHE,sharing=locked,id=c1,mode=0700,uid=1000,gid=1000 \\\n\
        --mount=type=bind,from=deps,source=/src,target=/mnt,rw \\\n\
        --mount=type=tmpfs,target=/tmp,size=64m \\\n\
        --mount=type=secret,id=npm,target=/root/.npmrc,required=true \\\n\
        --mount=type=secret,id=tok,env=TOKEN \\\n\
        --mount=type=ssh \\\n\
        --mount=type=ssh,id=other \\\n\
        --mount=type=bind,src=a,dst=/b,ro=false \\\n\
        --mount=type=bind,source=x,destination=/y,readonly \\\n\
        --mount=type=cache,target=/c,from=alpine:3,source=/var \\\n\
        build\n";
    let b = build(text);
    let r = match &b.stages.last().unwrap().instructions[1].instr {
        Instr::Run(r) => r.clone(),
        other => panic!("{other:?}"),
    };
    let m: Vec<_> = r.mounts.iter().map(|m| &m.mount).collect();
    assert_eq!(m[0].kind, MountType::Cache);
    assert_eq!(m[0].target.as_deref(), Some("/root/.cache"));
    assert_eq!(
        (
            m[0].sharing,
            m[0].id.as_deref(),
            m[0].mode,
            m[0].uid,
            m[0].gid
        ),
        (
            Some(Sharing::Locked),
            Some("c1"),
            Some(0o700),
            Some(1000),
            Some(1000)
        )
    );
    assert_eq!(
        (m[1].kind, m[1].readonly, m[1].source.as_deref()),
        (MountType::Bind, false, Some("/src"))
    );
    assert_eq!(
        r.mounts[1].from_ref,
        Some(FromRef::Stage {
            index: 0,
            name: Some("deps".into())
        })
    );
    assert_eq!((m[2].kind, m[2].size), (MountType::Tmpfs, Some(64 << 20)));
    assert_eq!(
        (m[3].kind, m[3].required, m[3].mode),
        (MountType::Secret, true, Some(0o400))
    );
    assert_eq!(
        (m[4].env.as_deref(), m[4].target.as_deref()),
        (Some("TOKEN"), None)
    );
    assert_eq!(
        (m[5].id.as_deref(), m[5].target.as_deref()),
        (Some("default"), Some("/run/buildkit/ssh_agent.0"))
    );
    assert_eq!(
        (m[6].id.as_deref(), m[6].target.as_deref()),
        (Some("other"), Some("/run/buildkit/ssh_agent.1"))
    );
    assert_eq!(
        (
            m[7].source.as_deref(),
            m[7].target.as_deref(),
            m[7].readonly
        ),
        (Some("a"), Some("/b"), false)
    );
    assert!(m[8].readonly);
    assert_eq!(
        r.mounts[9].from_ref,
        Some(FromRef::Image {
            reference: "alpine:3".into()
        })
    );
    assert_eq!(b.stages.last().unwrap().dependencies, [0]);
    for bad in [
        "type=cache",
        "type=bind,target=/x,sharing=shared",
        "type=tmpfs,target=/x,from=a",
        "type=secret",
        "type=bind,target=/x,size=1m",
        "type=cache,target=/x,sharing=sometimes",
        "type=cache,target=/x,uid=root",
        "type=cache,target=/x,required",
        "type=bind,target=/x,unknown=1",
        "type=volume,target=/x",
        "type=bind,target=/x,readonly=maybe",
    ] {
        let d = error(&format!("FROM scratch\nRUN --mount={bad} x\n"));
        assert_eq!(d.code, "bad-mount", "{bad}");
        assert_eq!(d.line, 2);
    }
    assert_eq!(
        error("FROM scratch\nRUN --mount=type=cache,target=${X:?needX} x\n").code,
        "required-variable"
    );
}

#[test]
fn run_heredocs() {
    let r = run("FROM scratch\nRUN <<EOF\napt-get update\napt-get install -y curl\nEOF\n");
    assert_eq!(
        r.argv,
        s(&["/bin/sh", "-c", "apt-get update\napt-get install -y curl\n"])
    );
    assert_eq!(r.heredocs[0].name, "EOF");
    let r = run("FROM scratch\nRUN <<EOT\n#!/usr/bin/env python3\nprint('hi')\nEOT\n");
    assert_eq!(r.argv, s(&["/dev/pipes/EOT"]));
    assert_eq!(
        r.script_file.as_ref().map(|f| f.content.as_str()),
        Some("#!/usr/bin/env python3\nprint('hi')\n")
    );
    let r = run("FROM scratch\nRUN python3 <<EOF\nprint(1)\nEOF\n");
    assert_eq!(r.argv[2], "python3 <<EOF\nprint(1)\nEOF");
    let r = run("FROM scratch\nRUN <<-EOF\n\techo $HOME\n\tEOF\n");
    assert_eq!(r.argv[2], "echo $HOME\n");
    let r = run("FROM scratch\nRUN cat <<A >a && cat <<'B' >b\n1\nA\n$2\nB\n");
    assert_eq!(r.heredocs.len(), 2);
    assert!(r.heredocs[0].expand && !r.heredocs[1].expand);
    assert_eq!(r.argv[2], "cat <<A >a && cat <<'B' >b\n1\nA\n$2\nB");
    let d = error("FROM scratch\nRUN <<EOF\nno end\n");
    assert_eq!(
        (d.code.as_str(), d.line, d.column),
        ("unterminated-heredoc", 2, 5)
    );
    // A heredoc marker in CMD is just text.
    assert!(matches!(
        one("FROM scratch\nCMD cat <<EOF\n"),
        Instr::Cmd { .. }
    ));
}

#[test]
fn cmd_entrypoint_shell() {
    match one("FROM scratch\nCMD [\"a\", \"b c\"]\n") {
        Instr::Cmd { argv, command } => {
            assert_eq!(argv, s(&["a", "b c"]));
            assert!(matches!(command, CommandForm::Exec(_)));
        }
        other => panic!("{other:?}"),
    }
    match one("FROM scratch\nENTRYPOINT exec nginx -g 'daemon off;'\n") {
        Instr::Entrypoint { argv, .. } => {
            assert_eq!(argv, s(&["/bin/sh", "-c", "exec nginx -g 'daemon off;'"]))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(one("FROM scratch\nCMD []\n"), Instr::Cmd { argv, .. } if argv.is_empty()));
    assert_eq!(
        one("FROM scratch\nSHELL [\"pwsh\", \"-c\"]\n"),
        Instr::Shell {
            shell: s(&["pwsh", "-c"])
        }
    );
    assert_eq!(error("FROM scratch\nSHELL /bin/bash -c\n").code, "bad-json");
    assert_eq!(error("FROM scratch\nSHELL []\n").code, "bad-json");
    assert!(warnings("FROM scratch\nCMD echo\n").contains(&"JSONArgsRecommended".into()));
    assert!(warnings("FROM scratch\nENTRYPOINT echo\n").contains(&"JSONArgsRecommended".into()));
    assert!(warnings("FROM scratch\nCMD [\"a\"]\n").is_empty());
    let w = warnings(
        "FROM scratch\nCMD [\"a\"]\nCMD [\"b\"]\nENTRYPOINT [\"a\"]\nENTRYPOINT [\"b\"]\nHEALTHCHECK NONE\nHEALTHCHECK NONE\n",
    );
    assert_eq!(
        w.iter()
            .filter(|c| *c == "MultipleInstructionsDisallowed")
            .count(),
        3
    );
}

#[test]
fn env_label_forms() {
    let e = target("FROM scratch\nENV A=1 B=\"two words\" C=x\\ y D='$A'\nENV E=$A F=${B}\nENV LEGACY value with  spaces\nENV A=2 G=$A\n").env;
    let get = |k: &str| e.iter().find(|v| v.key == k).map(|v| v.value.clone());
    assert_eq!(get("B").as_deref(), Some("two words"));
    assert_eq!(get("C").as_deref(), Some("x y"));
    assert_eq!(get("D").as_deref(), Some("$A"));
    assert_eq!(get("E").as_deref(), Some("1"));
    assert_eq!(get("F").as_deref(), Some("two words"));
    assert_eq!(get("LEGACY").as_deref(), Some("value with  spaces"));
    // Pairs of one ENV see the environment from before it.
    assert_eq!(get("G").as_deref(), Some("1"));
    assert_eq!(get("A").as_deref(), Some("2"));
    assert!(warnings("FROM scratch\nENV A b\n").contains(&"LegacyKeyValueFormat".into()));
    assert_eq!(error("FROM scratch\nENV A\n").code, "missing-argument");
    assert_eq!(error("FROM scratch\nENV A=1 B\n").code, "bad-key-value");
    assert_eq!(error("FROM scratch\nENV =x\n").code, "bad-key-value");
    match instrs("FROM scratch\nARG V=1\nLABEL \"com.x.y\"=\"a b\" v=$V\nLABEL old style\n")
        .remove(1)
    {
        Instr::Label { labels } => {
            assert_eq!(labels, vec![Var::new("com.x.y", "a b"), Var::new("v", "1")])
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        one("FROM scratch\nMAINTAINER Jane <j@x>\n"),
        Instr::Maintainer {
            name: "Jane <j@x>".into()
        }
    );
    assert!(warnings("FROM scratch\nMAINTAINER me\n").contains(&"MaintainerDeprecated".into()));
}

#[test]
fn expose_volume_user_workdir_stopsignal() {
    let ports = |t: &str| match instrs(t).pop() {
        Some(Instr::Expose { ports }) => ports,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        ports("FROM scratch\nEXPOSE 80 443/tcp 53/udp\n"),
        s(&["80/tcp", "443/tcp", "53/udp"])
    );
    assert_eq!(
        ports("FROM scratch\nEXPOSE 8000-8002\n"),
        s(&["8000/tcp", "8001/tcp", "8002/tcp"])
    );
    assert_eq!(
        ports("FROM scratch\nARG P=\"9000 9001/udp\"\nEXPOSE $P\n"),
        s(&["9000/tcp", "9001/udp"])
    );
    assert_eq!(ports("FROM scratch\nEXPOSE 80/sctp\n"), s(&["80/sctp"]));
    assert!(warnings("FROM scratch\nEXPOSE 80/TCP\n").contains(&"ExposeProtoCasing".into()));
    assert!(
        warnings("FROM scratch\nEXPOSE 0.0.0.0:80:80\n").contains(&"ExposeInvalidFormat".into())
    );
    assert_eq!(error("FROM scratch\nEXPOSE http\n").code, "bad-port");
    assert_eq!(
        one("FROM scratch\nVOLUME [\"/a\", \"/b c\"]\n"),
        Instr::Volume {
            paths: s(&["/a", "/b c"])
        }
    );
    assert_eq!(
        one("FROM scratch\nVOLUME /a /b\n"),
        Instr::Volume {
            paths: s(&["/a", "/b"])
        }
    );
    assert_eq!(error("FROM scratch\nVOLUME [\"\"]\n").code, "bad-volume");
    assert_eq!(
        instrs("FROM scratch\nARG U=app\nUSER ${U}:grp\n")[1],
        Instr::User {
            user: "app:grp".into()
        }
    );
    let w = instrs("FROM scratch\nWORKDIR /app\nWORKDIR src\nWORKDIR ../lib/./x\n");
    assert_eq!(
        w[1],
        Instr::Workdir {
            path: "src".into(),
            resolved: "/app/src".into()
        }
    );
    assert_eq!(
        w[2],
        Instr::Workdir {
            path: "../lib/./x".into(),
            resolved: "/app/lib/x".into()
        }
    );
    assert_eq!(
        target("FROM scratch\nWORKDIR /app\nWORKDIR src\n").workdir,
        "/app/src"
    );
    assert!(warnings("FROM scratch\nWORKDIR rel\n").contains(&"WorkdirRelativePath".into()));
    assert!(
        !warnings("FROM scratch\nWORKDIR /abs\nWORKDIR rel\n")
            .contains(&"WorkdirRelativePath".into())
    );
    assert_eq!(
        one("FROM scratch\nSTOPSIGNAL SIGKILL\n"),
        Instr::Stopsignal {
            signal: "SIGKILL".into()
        }
    );
    assert_eq!(
        instrs("FROM scratch\nARG S=9\nSTOPSIGNAL $S\n")[1],
        Instr::Stopsignal { signal: "9".into() }
    );
    assert_eq!(
        error("FROM scratch\nSTOPSIGNAL SIGNOPE\n").code,
        "bad-signal"
    );
}

#[test]
fn copy_flags() {
    let text = "FROM alpine AS builder\nFROM scratch\nARG OWNER=1000\n\
        COPY --from=builder --chown=${OWNER}:grp --chmod=0755 --link --parents --exclude=*.md --exclude=tmp/ a b /dst/\n";
    let c = copy(text);
    assert_eq!(
        c.from,
        Some(FromRef::Stage {
            index: 0,
            name: Some("builder".into())
        })
    );
    assert_eq!(c.chown.as_deref(), Some("1000:grp"));
    assert_eq!(c.chmod, Some(Chmod::Octal(0o755)));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, s(&["*.md", "tmp/"]));
    assert_eq!(c.dest, "/dst/");
    assert_eq!(
        c.sources,
        vec![
            Source::Path { path: "a".into() },
            Source::Path { path: "b".into() }
        ]
    );
    assert_eq!(
        copy("FROM alpine\nFROM scratch\nCOPY --from=0 a b\n").from,
        Some(FromRef::Stage {
            index: 0,
            name: None
        })
    );
    assert_eq!(
        copy("FROM scratch\nCOPY --from=nginx:1.25 a b\n").from,
        Some(FromRef::Image {
            reference: "nginx:1.25".into()
        })
    );
    let mut o = opts(&[]);
    o.named_contexts.insert("assets".into());
    let b = build_with("FROM scratch\nCOPY --from=assets . /a\n", &o);
    match &b.stages[0].instructions[0].instr {
        Instr::Copy(c) => assert_eq!(
            c.from,
            Some(FromRef::Context {
                name: "assets".into()
            })
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        copy("FROM scratch\nCOPY --chmod=u+rwx,g+rx a b\n").chmod,
        Some(Chmod::Symbolic("u+rwx,g+rx".into()))
    );
    assert!(!copy("FROM scratch\nCOPY --link=false a b\n").link);
    assert!(copy("FROM scratch\nCOPY --link=true a b\n").link);
    let c = copy("FROM scratch\nCOPY [\"a b\", \"c\", \"/d e/\"]\n");
    assert_eq!(c.sources.len(), 2);
    assert_eq!(c.dest, "/d e/");
    let c =
        copy("FROM scratch\nARG N=world\nCOPY <<EOF <<'RAW' /etc/\nhello $N\nEOF\nhello $N\nRAW\n");
    assert_eq!(
        c.sources,
        vec![
            Source::Heredoc(HeredocFile {
                name: "EOF".into(),
                content: "hello world\n".into(),
                expand: true
            }),
            Source::Heredoc(HeredocFile {
                name: "RAW".into(),
                content: "hello $N\n".into(),
                expand: false
            }),
        ]
    );
    assert_eq!(error("FROM scratch\nCOPY a\n").code, "missing-argument");
    assert_eq!(
        error("FROM scratch\nCOPY --chmod=999 a b\n").code,
        "bad-flag"
    );
    assert_eq!(
        error("FROM scratch\nCOPY --link=yes a b\n").code,
        "bad-flag"
    );
    assert_eq!(
        error("FROM scratch\nCOPY --checksum=sha256:x a b\n").code,
        "unknown-flag"
    );
    assert_eq!(
        error("FROM scratch\nCOPY --from=9 a b\n").code,
        "unknown-stage"
    );
    assert_eq!(
        error("FROM scratch\nCOPY --from=Not_An_Image! a b\n").code,
        "unknown-stage"
    );
    assert_eq!(error("FROM scratch\nCOPY [\"a\", \"b\"\n").code, "bad-json");
}

#[test]
fn add_flags() {
    let sum = "sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d";
    let a = add(&format!(
        "FROM scratch\nADD --checksum={sum} --chown=app --chmod=644 --link https://example.com/x.tgz /x\n"
    ));
    assert_eq!(a.checksum.as_deref(), Some(sum));
    assert_eq!(
        (a.chown.as_deref(), a.chmod.clone(), a.link),
        (Some("app"), Some(Chmod::Octal(0o644)), true)
    );
    let a = add(
        "FROM scratch\nADD --keep-git-dir=true --exclude=docs https://github.com/a/b.git#v1 /src\n",
    );
    assert!(a.keep_git_dir);
    assert_eq!(a.exclude, s(&["docs"]));
    assert_eq!(a.unpack, None);
    assert_eq!(
        add("FROM scratch\nADD --unpack=true https://x/a.tar.gz /\n").unpack,
        Some(true)
    );
    assert_eq!(
        add("FROM scratch\nADD --unpack=false a.tar.gz /\n").unpack,
        Some(false)
    );
    let a = add("FROM scratch\nADD <<EOF /hello\nhi\nEOF\n");
    assert!(matches!(&a.sources[0], Source::Heredoc(h) if h.content == "hi\n"));
    assert_eq!(
        error("FROM scratch\nADD --from=x a b\n").code,
        "unknown-flag"
    );
    assert_eq!(
        error(&format!("FROM scratch\nADD --checksum={sum} local.tgz /\n")).code,
        "bad-flag"
    );
    assert_eq!(
        error("FROM scratch\nADD --checksum=md5:abc https://x/y /\n").code,
        "bad-flag"
    );
}

#[test]
fn healthcheck_forms() {
    let h = |t: &str| match instrs(t).pop() {
        Some(Instr::Healthcheck(h)) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(h("FROM scratch\nHEALTHCHECK NONE\n").test, s(&["NONE"]));
    let x = h(
        "FROM scratch\nHEALTHCHECK --interval=30s --timeout=3s --start-period=1m --start-interval=500ms --retries=3 CMD curl -f http://localhost/ || exit 1\n",
    );
    assert_eq!(
        x.test,
        s(&["CMD-SHELL", "curl -f http://localhost/ || exit 1"])
    );
    assert_eq!(
        (
            x.interval_ns,
            x.timeout_ns,
            x.start_period_ns,
            x.start_interval_ns,
            x.retries
        ),
        (
            Some(30_000_000_000),
            Some(3_000_000_000),
            Some(60_000_000_000),
            Some(500_000_000),
            Some(3)
        )
    );
    assert_eq!(
        h("FROM scratch\nHEALTHCHECK CMD [\"/bin/check\", \"-q\"]\n").test,
        s(&["CMD", "/bin/check", "-q"])
    );
    assert_eq!(
        h("FROM scratch\nHEALTHCHECK --interval=0s CMD x\n").interval_ns,
        None
    );
    for bad in [
        "HEALTHCHECK --interval=10 CMD x",
        "HEALTHCHECK --interval=1us CMD x",
        "HEALTHCHECK --retries=-1 CMD x",
        "HEALTHCHECK --retries=many CMD x",
        "HEALTHCHECK NONE extra",
        "HEALTHCHECK RUN x",
        "HEALTHCHECK CMD",
        "HEALTHCHECK --foo=1 CMD x",
    ] {
        assert!(error(&format!("FROM scratch\n{bad}\n")).line == 2, "{bad}");
    }
}

#[test]
fn arg_scoping() {
    let args = |t: &str, o: &[(&str, &str)]| -> Vec<ArgValue> {
        build_with(t, &opts(o))
            .stages
            .pop()
            .unwrap()
            .instructions
            .into_iter()
            .filter_map(|i| match i.instr {
                Instr::Arg { args } => Some(args),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let v = |k: &str, val: Option<&str>| ArgValue {
        key: k.into(),
        value: val.map(str::to_string),
    };
    // Declared in stage: default, then build-arg override, then global value.
    assert_eq!(args("FROM scratch\nARG A=1\n", &[]), [v("A", Some("1"))]);
    assert_eq!(
        args("FROM scratch\nARG A=1\n", &[("A", "2")]),
        [v("A", Some("2"))]
    );
    assert_eq!(
        args("ARG A=g\nFROM scratch\nARG A\n", &[]),
        [v("A", Some("g"))]
    );
    assert_eq!(
        args("ARG A=g\nFROM scratch\nARG A=local\n", &[]),
        [v("A", Some("local"))]
    );
    assert_eq!(
        args("ARG A=g\nFROM scratch\nARG A\n", &[("A", "cli")]),
        [v("A", Some("cli"))]
    );
    assert_eq!(args("FROM scratch\nARG A\n", &[]), [v("A", None)]);
    assert_eq!(
        args("FROM scratch\nARG A=1 B=$A\n", &[]),
        [v("A", Some("1")), v("B", Some("1"))]
    );
    // Platform args get automatic values when declared.
    let mut o = opts(&[]);
    o.target_platform = "linux/arm64/v8".parse().unwrap();
    let b = build_with(
        "FROM scratch\nARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDARCH\nENV T=$TARGETARCH\n",
        &o,
    );
    match &b.stages[0].instructions[0].instr {
        Instr::Arg { args } => assert_eq!(
            args,
            &vec![
                v("TARGETPLATFORM", Some("linux/arm64/v8")),
                v("TARGETOS", Some("linux")),
                v("TARGETARCH", Some("arm64")),
                v("TARGETVARIANT", Some("v8")),
                v("BUILDARCH", Some("amd64")),
            ]
        ),
        other => panic!("{other:?}"),
    }
    // Without declaration they are not visible in a stage.
    let e = target("FROM scratch\nENV T=x${TARGETARCH}\n").env;
    assert!(e.contains(&Var::new("T", "x")));
    // But they are in FROM.
    assert_eq!(
        target("FROM alpine:${BUILDARCH}\n").base,
        Base::Image {
            reference: "alpine:amd64".into()
        }
    );
    // ENV shadows ARG regardless of order.
    let e = target("FROM scratch\nENV X=env\nARG X=arg\nENV Y=$X\n").env;
    assert!(e.contains(&Var::new("Y", "env")));
    // SOURCE_DATE_EPOCH.
    assert_eq!(
        build_with(
            "FROM scratch\n",
            &opts(&[("SOURCE_DATE_EPOCH", "1700000000")])
        )
        .source_date_epoch,
        Some(1_700_000_000)
    );
    assert!(
        diags_with("FROM scratch\n", &opts(&[("SOURCE_DATE_EPOCH", "soon")]))
            .iter()
            .any(|d| d.is_error())
    );
    // Global args default expansion sees earlier globals.
    let b = build("ARG A=1\nARG B=${A}2\nFROM x:$B\n");
    assert_eq!(
        b.stages[0].base,
        Base::Image {
            reference: "x:12".into()
        }
    );
    assert_eq!(b.global_args[1], v("B", Some("12")));
}

#[test]
fn onbuild() {
    match one("FROM scratch\nONBUILD RUN echo $HOME\n") {
        Instr::Onbuild { expression } => assert_eq!(expression, "RUN echo $HOME"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error("FROM scratch\nONBUILD ONBUILD RUN x\n").code,
        "bad-onbuild"
    );
    assert_eq!(error("FROM scratch\nONBUILD FROM x\n").code, "bad-onbuild");
    assert_eq!(
        error("FROM scratch\nONBUILD MAINTAINER x\n").code,
        "bad-onbuild"
    );
    assert_eq!(
        error("FROM scratch\nONBUILD BOGUS x\n").code,
        "unknown-instruction"
    );
    // Triggers of a parent stage run after FROM in the child.
    let b = build(
        "FROM scratch AS base\nONBUILD COPY . /app\nONBUILD RUN make\nFROM base\nRUN after\n",
    );
    let child = b.stages.last().unwrap();
    assert!(child.instructions[0].from_onbuild && child.instructions[1].from_onbuild);
    assert!(matches!(child.instructions[0].instr, Instr::Copy(_)));
    assert!(!child.instructions[2].from_onbuild);
    // Triggers from an image config supplied by the caller.
    let mut o = opts(&[]);
    o.images.insert(
        "node:20".into(),
        ImageInfo {
            env: vec![("NODE_VERSION".into(), "20".into())],
            onbuild: vec!["RUN echo $NODE_VERSION".into()],
            ..Default::default()
        },
    );
    let b = build_with("FROM node:20\nENV V=$NODE_VERSION\n", &o);
    let st = &b.stages[0];
    assert!(st.instructions[0].from_onbuild);
    assert!(st.env.contains(&Var::new("V", "20")));
    let t =
        kiln_dockerfile::parse_onbuild_triggers(&["RUN a".into(), "COPY --chown=1 x /y".into()])
            .unwrap();
    assert_eq!(t.len(), 2);
    assert!(kiln_dockerfile::parse_onbuild_triggers(&["ONBUILD RUN x".into()]).is_err());
}

#[test]
fn directives_and_lines() {
    let b =
        build("# syntax=docker/dockerfile:1.7\n# escape=`\nFROM scratch\nENV P=C:\\dir `\n  Q=1\n");
    assert!(b.stages[0].env.contains(&Var::new("P", "C:\\dir")));
    assert!(b.stages[0].env.contains(&Var::new("Q", "1")));
    let df = kiln_dockerfile::parse(
        "D",
        "# syntax=docker/dockerfile:1\n#check=skip=all\nFROM scratch\n",
    )
    .unwrap();
    assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.directives.check.as_deref(), Some("skip=all"));
    // A directive after a blank line is a comment.
    let df = kiln_dockerfile::parse("D", "\n# escape=`\nFROM scratch\n").unwrap();
    assert_eq!(df.directives.escape, '\\');
    assert_eq!(error("# escape=x\nFROM scratch\n").code, "invalid-escape");
    assert_eq!(
        error("# escape=\\\n# escape=`\nFROM scratch\n").code,
        "duplicate-directive"
    );
    // Continuations skip comment lines; empty continuation lines warn.
    let r = run("FROM scratch\nRUN echo a \\\n# comment\n  b \\\n\n  c\n");
    assert_eq!(r.argv[2], "echo a   b   c");
    assert!(warnings("FROM scratch\nRUN a \\\n\n b\n").contains(&"NoEmptyContinuation".into()));
    // Lower-case keywords, leading whitespace, CRLF, BOM.
    let i = instrs("\u{feff}from scratch\r\n   run echo\r\n");
    assert!(matches!(&i[0], Instr::Run(r) if r.argv[2] == "echo"));
    // check=skip / error=true.
    assert!(warnings("# check=skip=JSONArgsRecommended\nFROM scratch\nCMD x\n").is_empty());
    assert!(warnings("# check=skip=all\nFROM scratch\nCMD x\nMAINTAINER m\n").is_empty());
    let d = error("# check=error=true\nFROM scratch\nCMD x\n");
    assert_eq!(d.code, "JSONArgsRecommended");
}

#[test]
fn stages_and_targets() {
    let text = "FROM alpine AS a\nFROM alpine AS b\nCOPY --from=a /x /x\nFROM alpine AS c\nFROM b AS d\nRUN --mount=from=c,target=/c x\n";
    let b = build(text);
    let idx: Vec<usize> = b.stages.iter().map(|s| s.index).collect();
    assert_eq!(idx, [0, 1, 2, 3]);
    assert_eq!(b.target, 3);
    let mut o = opts(&[]);
    o.target = Some("B".into());
    let b = build_with(text, &o);
    assert_eq!(b.stages.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1]);
    o.target = Some("nope".into());
    assert_eq!(diags_with(text, &o)[0].code, "unknown-target");
    // Forward --from references are allowed; they order the build.
    let b = build(
        "FROM alpine AS app\nCOPY --from=assets /a /a\nFROM alpine AS assets\nRUN x\nFROM app\n",
    );
    assert_eq!(
        b.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        [1, 0, 2]
    );
    // Cycles.
    let d = error("FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nCOPY --from=a /x /x\n");
    assert_eq!((d.code.as_str(), d.line), ("circular-dependency", 4));
    assert_eq!(
        error("FROM alpine AS a\nCOPY --from=a /x /x\n").code,
        "circular-dependency"
    );
    assert_eq!(
        error("FROM alpine AS a\nFROM alpine AS A\n").code,
        "DuplicateStageName"
    );
    assert_eq!(error("FROM alpine AS 1st\n").code, "invalid-stage-name");
    // Errors in stages the target doesn't need are not reported.
    let mut o = opts(&[]);
    o.target = Some("good".into());
    let d = diags_with(
        "FROM alpine AS good\nFROM alpine AS bad\nCOPY ${X:?unset} /\n",
        &o,
    );
    assert!(!d.iter().any(|d| d.is_error()));
    // Stage names are case-insensitive, FROM only sees earlier stages.
    let b = build("FROM alpine AS Base\nFROM BASE\n");
    assert_eq!(b.stages[1].base, Base::Stage { index: 0 });
    let b = build("FROM later\nFROM alpine AS later\n");
    assert_eq!(b.stages.len(), 1);
    assert_eq!(
        b.stages[0].base,
        Base::Image {
            reference: "alpine".into()
        }
    );
    // Parent env flows into the child stage.
    let st = target("FROM scratch AS p\nENV A=1\nWORKDIR /w\nFROM p\nENV B=$A\n");
    assert!(st.env.contains(&Var::new("B", "1")));
    assert_eq!(st.workdir, "/w");
}

#[test]
fn lint_rules() {
    let w = warnings("FROM alpine as Build\nRUN x\n");
    assert!(w.contains(&"FromAsCasing".into()) && w.contains(&"StageNameCasing".into()));
    assert!(warnings("FROM alpine AS scratch\n").contains(&"ReservedStageName".into()));
    assert!(
        warnings("FROM alpine\nrun x\nRUN y\nRUN z\n")
            .contains(&"ConsistentInstructionCasing".into())
    );
    assert!(warnings("FROM scratch\nENV A=$UNDEFINED\n").contains(&"UndefinedVar".into()));
    let d = diags("FROM scratch\nARG VERSION=1\nENV A=$VERSIN\n");
    assert!(
        d.iter()
            .any(|d| d.message.contains("did you mean $VERSION"))
    );
    // Unknown base image env: no UndefinedVar (PATH etc. may come from it).
    assert!(
        !warnings("FROM alpine\nENV PATH=$PATH:/x GOPATH=$GOPATH\n")
            .contains(&"UndefinedVar".into())
    );
    assert!(warnings("FROM scratch\nARG GITHUB_TOKEN\n").contains(&"SecretsUsedInArgOrEnv".into()));
    assert!(
        warnings("FROM --platform=$TARGETPLATFORM alpine\n")
            .contains(&"RedundantTargetPlatform".into())
    );
    assert!(
        warnings("FROM --platform=linux/amd64 alpine\n")
            .contains(&"FromPlatformFlagConstDisallowed".into())
    );
    assert!(
        !warnings("FROM --platform=linux/amd64 alpine AS build-amd64\n")
            .contains(&"FromPlatformFlagConstDisallowed".into())
    );
}

#[test]
fn errors_name_file_line_and_column() {
    let d = error("FROM scratch\n  RUNN x\n");
    assert_eq!(
        (d.code.as_str(), d.line, d.column),
        ("unknown-instruction", 2, 3)
    );
    assert_eq!(d.help.as_deref(), Some("did you mean RUN?"));
    assert!(
        d.to_string()
            .starts_with("Dockerfile:2:3: unknown instruction: RUNN")
    );
    let d = error("RUN x\nFROM scratch\n");
    assert_eq!((d.code.as_str(), d.line), ("no-build-stage", 1));
    assert_eq!(error("ARG A\n").code, "no-stages");
    assert_eq!(error("").code, "no-stages");
    let d = error("FROM scratch\nCOPY --chown=a \\\n  --chmod=x a b\n");
    assert_eq!((d.line, d.column), (3, 3));
    // Rendering with miette shows the line and a caret.
    let mut out = String::new();
    let h = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
    h.render_report(&mut out, &d).unwrap();
    assert!(
        out.contains("--chmod=x") && out.contains("Dockerfile:3:3"),
        "{out}"
    );
}

#[test]
fn json_intent() {
    // Shell tests that look a bit like JSON stay shell form.
    let r = run("FROM scratch\nRUN [ \"$A\" = \"b\" ] && echo same\n");
    assert_eq!(r.argv[2], "[ \"$A\" = \"b\" ] && echo same");
    assert_eq!(error("FROM scratch\nRUN [\"a\" \"b\"]\n").code, "bad-json");
    assert_eq!(error("FROM scratch\nCMD ['a', 'b']\n").line, 2);
    assert_eq!(
        error("FROM scratch\nENTRYPOINT [ \"a\", \"b\" \n").code,
        "bad-json"
    );
    assert_eq!(error("FROM scratch\nCOPY [\"a\", \"b\"\n").code, "bad-json");
}

#[test]
fn child_stage_inherits_args() {
    let b = build("FROM scratch AS p\nARG A=1\nFROM p\nRUN x\n");
    match &b.stages[1].instructions[0].instr {
        Instr::Run(r) => assert_eq!(r.history_args, vec![Var::new("A", "1")]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn heredoc_spacing_and_escapes() {
    // `<< EOF` (space) is accepted by BuildKit >= 0.22.
    let c = copy("FROM scratch\nCOPY << EOF /x\nhi\nEOF\n");
    assert_eq!(
        c.sources,
        vec![Source::Heredoc(HeredocFile {
            name: "EOF".into(),
            content: "hi\n".into(),
            expand: true
        })]
    );
    assert_eq!(c.dest, "/x");
    let r = run("FROM scratch\nRUN << EOF\necho hi\nEOF\n");
    assert_eq!(r.argv, s(&["/bin/sh", "-c", "echo hi\n"]));
    // COPY heredoc bodies keep quotes; escapes follow the usual rules.
    let c = copy("FROM scratch\nARG V=x\nCOPY <<EOF /f\n\"$V\" '$V' \\$V a\\b\nEOF\n");
    assert!(matches!(&c.sources[0], Source::Heredoc(h) if h.content == "\"x\" 'x' $V ab\n"));
}

#[test]
fn from_typo_warns() {
    let w = diags("FROM alpine AS builder\nFROM scratch\nCOPY --from=buidler /a /a\n");
    let d = w
        .iter()
        .find(|d| d.code == "FromNotAStage")
        .expect("warning");
    assert_eq!(d.help.as_deref(), Some("did you mean stage 'builder'?"));
    assert!(
        !warnings("FROM alpine AS builder\nFROM scratch\nCOPY --from=nginx /a /a\n")
            .contains(&"FromNotAStage".into())
    );
}

#[test]
fn platform_args_declared_globally() {
    let b = build("ARG TARGETARCH\nFROM alpine:$TARGETARCH\nARG TARGETARCH\nENV A=$TARGETARCH\n");
    assert_eq!(
        b.stages[0].base,
        Base::Image {
            reference: "alpine:amd64".into()
        }
    );
    assert!(b.stages[0].env.contains(&Var::new("A", "amd64")));
}

# The bench projects (sourced, not run; needs bench/lib.sh's hostconf):
# bench/build builds all five, bench/isolation the RUN-heavy apt and pip.
#   make_project NAME DIR    a context DIR with a Dockerfile
#   change_project NAME DIR  edit one file that a late COPY uses
# The Dockerfiles name the bases bench_bases makes ($BUSYBOX, $DEBIAN).
make_project() { # name dir
  local p="$1" d="$2"; rm -rf "$d"; mkdir -p "$d"
  case "$p" in
  multistage)
    mkdir -p "$d/cmd/app" "$d/internal/lib"
    echo 'module example.com/app' > "$d/go.mod"; echo 'dep v1 h1:x=' > "$d/go.sum"
    for i in $(seq 1 200); do echo "package lib // $i" > "$d/internal/lib/f$i.go"; done
    echo 'package main // v1' > "$d/cmd/app/main.go"
    cat > "$d/Dockerfile" <<'DF'
FROM kiln-test/busybox:1 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN mkdir -p /go/pkg && for i in $(seq 1 300); do echo "module $i" > /go/pkg/m$i; done
COPY . .
RUN mkdir -p /out && cat $(find . -name '*.go' | sort) | sha256sum > /out/app && sleep 1

FROM kiln-test/busybox:1 AS test
COPY --from=build /out/app /app
RUN test -s /app

FROM kiln-test/busybox:1
COPY --from=build /out/app /usr/local/bin/app
USER 65534
ENTRYPOINT ["/usr/local/bin/app"]
DF
    ;;
  apt)
    hostconf "$d"; echo 'echo v1' > "$d/app.sh"
    cat > "$d/Dockerfile" <<'DF'
FROM kiln-test/debian:bookworm
COPY hostconf/ /
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends hello && rm -rf /var/lib/apt/lists/*
COPY app.sh /usr/local/bin/app.sh
CMD ["hello"]
DF
    ;;
  pip)
    hostconf "$d"; mkdir -p "$d/src"; echo 'six==1.16.0' > "$d/requirements.txt"; echo 'print("v1")' > "$d/src/main.py"
    cat > "$d/Dockerfile" <<'DF'
FROM kiln-test/debian:bookworm
COPY hostconf/ /
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
COPY requirements.txt /app/
RUN PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/venv/bin/pip install --no-cache-dir -q -r /app/requirements.txt
COPY src/ /app/src/
CMD ["/opt/venv/bin/python", "/app/src/main.py"]
DF
    ;;
  copy20k)
    mkdir -p "$d/tree"
    # 20,000 small files in 200 dirs.
    python3 - "$d/tree" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(200):
    d = os.path.join(root, f"d{i:03}")
    os.makedirs(d, exist_ok=True)
    for j in range(100):
        with open(os.path.join(d, f"f{j:03}.txt"), "w") as f:
            f.write(f"file {i} {j}\n" * 8)
PY
    cat > "$d/Dockerfile" <<'DF'
FROM kiln-test/busybox:1
COPY tree/ /data/
RUN find /data -type f | wc -l > /count
DF
    ;;
  metadata)
    { echo 'FROM kiln-test/busybox:1'
      for i in $(seq 1 17); do echo "ENV VAR_$i=value-$i"; done
      for i in $(seq 1 17); do echo "LABEL org.example.l$i=\"label $i\""; done
      for i in $(seq 1 16); do echo "EXPOSE $((8000 + i))"; done
      echo 'COPY version /version'
    } > "$d/Dockerfile"
    echo v1 > "$d/version"
    ;;
  esac
}

change_project() { # name dir: edit one file that a late COPY uses
  case "$1" in
  multistage) echo "package main // $RANDOM$RANDOM" > "$2/cmd/app/main.go" ;;
  apt) echo "echo $RANDOM$RANDOM" > "$2/app.sh" ;;
  pip) echo "print($RANDOM$RANDOM)" > "$2/src/main.py" ;;
  copy20k) echo "changed $RANDOM$RANDOM" > "$2/tree/d100/f050.txt" ;;
  metadata) echo "$RANDOM$RANDOM" > "$2/version" ;;
  esac
}

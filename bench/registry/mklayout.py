#!/usr/bin/env python3
"""Writes a one-image OCI layout by hand (so the bench needs no importer).

usage: mklayout.py OUT_DIR TAG MEDIA_TYPE LAYER_FILE:DIFF_ID...
Each layer file is moved into OUT_DIR/blobs/sha256/.
"""
import hashlib, json, os, shutil, sys

def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()

def put(out, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs/sha256", d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)

out, tag, media = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(os.path.join(out, "blobs/sha256"), exist_ok=True)
layers, diff_ids = [], []
for arg in sys.argv[4:]:
    path, diff_id = arg.rsplit(":", 1) if arg.count(":") == 1 else (arg, None)
    d = sha256_file(path)
    size = os.path.getsize(path)
    shutil.move(path, os.path.join(out, "blobs/sha256", d))
    layers.append({"mediaType": media, "digest": "sha256:" + d, "size": size})
    diff_ids.append("sha256:" + (diff_id or d))
config = {"architecture": "amd64", "os": "linux",
          "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
          "rootfs": {"type": "layers", "diff_ids": diff_ids}}
cd, cs = put(out, json.dumps(config, separators=(",", ":")).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layers}
md, ms = put(out, json.dumps(manifest, separators=(",", ":")).encode())
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
print(md)

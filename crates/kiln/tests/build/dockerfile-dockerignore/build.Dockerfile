# build.Dockerfile.dockerignore (beside the Dockerfile) replaces the
# context's .dockerignore for this Dockerfile.
FROM kiln-test/busybox:1
COPY . /app/

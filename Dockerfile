# syntax=docker/dockerfile:1
# The operator image: a release build in the Rust image, run from distroless as non-root.
#
#   docker build -t ghcr.io/ecs-worker-operator/ecs-worker-operator:0.1.0 .
#
# The runtime image has no shell and no package manager; the binary needs only glibc (rustls
# does TLS, so no OpenSSL). deploy/deployment.yaml runs it as `run --leader-election`.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Every workspace member's manifest and sources must be present for cargo to load the
# workspace; only the operator package is built.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY worker worker
COPY tests/support tests/support
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ecs-worker-operator --bin ecs-worker-operator \
    && install -D -m 0755 target/release/ecs-worker-operator /out/ecs-worker-operator

# glibc + libgcc from Debian 12, the same as the build stage; user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="ecs-worker-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs queue-driven batch workers on AWS ECS-on-EC2 and scales them to zero" \
      org.opencontainers.image.source="https://github.com/ecs-worker-operator/ecs-worker-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ecs-worker-operator /usr/local/bin/ecs-worker-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ecs-worker-operator"]
CMD ["run"]

# syntax=docker/dockerfile:1
# The operator built against glibc on Debian bookworm and run on distroless/cc (glibc, libgcc,
# CA certificates and nothing else: no shell) as the numeric nonroot user.
# `make image` builds it with buildah, offline base images included (hack/image/).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The crate registry and target/ are cache mounts (BuildKit, buildah): a rebuild after a source
# change compiles lockguard only. COPY keeps the files' times, which can be older than the
# cached build of another checkout, so the crate's roots are touched to force its rebuild.
# The binary leaves the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    touch src/lib.rs src/main.rs \
 && cargo build --release --locked --bin lockguard \
 && cp target/release/lockguard /usr/local/bin/lockguard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/lockguard /usr/local/bin/lockguard
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/lockguard"]
CMD ["run"]

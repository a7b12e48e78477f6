# syntax=docker/dockerfile:1
# A static musl binary on distroless/static, running as the numeric nonroot user.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools protobuf-compiler \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin lockguard

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/lockguard /usr/local/bin/lockguard
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/lockguard"]
CMD ["run"]

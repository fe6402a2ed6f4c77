# Junction container image. Built by compose.yaml; also usable alone, with the SQLite database
# in a named volume so that it outlives the container:
#   docker build -t junction . && docker run -p 8787:8787 -v junction-data:/var/lib/junction junction
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The dependencies first, in layers of their own that depend only on the manifest and the
# lockfile: a change to Junction's sources then rebuilds Junction alone. Cargo wants every
# target the manifest names (the library, the two binaries, the test crate) to exist, so each
# gets an empty stand-in here.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/junction-bench tests/it \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/junction-bench/main.rs \
    && touch src/lib.rs tests/it/main.rs \
    && cargo build --release --locked --bin junction
# Then Junction itself, over the stand-ins. COPY keeps the files' own modification times, which
# can be older than the stand-ins' build: touching the crate roots makes cargo rebuild the crate.
COPY src src
COPY migrations migrations
RUN touch src/lib.rs src/main.rs && cargo build --release --locked --bin junction

FROM debian:bookworm-slim
# The system's certificate authorities, for rediss:// (and Postgres sslmode=verify-*) to hosted services.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
RUN useradd --system --create-home --home-dir /var/lib/junction junction
COPY --from=build /src/target/release/junction /usr/local/bin/junction
COPY config.toml /etc/junction/config.toml
WORKDIR /var/lib/junction
# The default store (sqlite://data/junction.db) lives here: a volume, not the container's layer.
VOLUME /var/lib/junction
USER junction
# Inside a container, listen on every interface; the file default is loopback only.
ENV JUNCTION_SERVER__LISTEN=0.0.0.0:8787
EXPOSE 8787
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["junction", "healthcheck", "http://127.0.0.1:8787"]
ENTRYPOINT ["junction", "--config", "/etc/junction/config.toml"]
CMD ["serve"]
